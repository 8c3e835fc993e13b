/**
 * Checking one command-line value against its domain schema, with a message that names the flag
 * (or argument) and the value: `--name "Bad_Name": a VM name is a lowercase DNS label …`.
 */
import { Either, type ParseResult, Schema } from "effect"
import { InvalidArgument } from "../domain/Errors.js"
import { parseIssues } from "../node/ParseIssues.js"

/** The messages of a parse error, without repeats. */
export const issueMessages = (error: ParseResult.ParseError): ReadonlyArray<string> => [
  ...new Set(parseIssues(error).map((issue) => issue.message))
]

/** `--vcpus 0` or `--name "web"`: how a problem quotes the value it is about. */
export const describe = (origin: string, value: unknown): string =>
  `${origin} ${typeof value === "string" ? JSON.stringify(value) : String(value)}`

/**
 * Decodes `value` with `schema`; on failure pushes `origin value: message` onto `problems` and
 * returns undefined, so a command can report every bad flag at once.
 */
export const check = <A, I>(
  schema: Schema.Schema<A, I, never>,
  value: unknown,
  origin: string,
  problems: Array<string>
): A | undefined => {
  const result = Schema.decodeUnknownEither(schema, { errors: "all" })(value)
  if (Either.isRight(result)) return result.right
  problems.push(`${describe(origin, value)}: ${issueMessages(result.left).join("; ")}`)
  return undefined
}

/** One `InvalidArgument` listing every problem; its subject is the first flag named. */
export const invalidArgument = (problems: ReadonlyArray<string>): InvalidArgument => {
  const subject = /^(--[a-z-]+|[A-Z][A-Z_]+)/.exec(problems[0] ?? "")?.[1]
  return new InvalidArgument({
    message: problems.join("; "),
    ...(subject !== undefined ? { subject } : {})
  })
}
