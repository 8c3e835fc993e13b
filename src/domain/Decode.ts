/**
 * Validating input from outside (CLI flags, API bodies, config files, peer messages, files on disk)
 * with a schema, turning a failure into Blixard's `InvalidArgument` with every problem and where it
 * is: `BLX_INVALID_ARGUMENT: --name "Web": a VM name is a lowercase DNS label …`.
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { InvalidArgument } from "./Errors.js"
import type { NodeId } from "./NodeId.js"

/** One line per problem, each prefixed by the path of the offending field (if any). */
export const describeParseError = (error: ParseResult.ParseError): string => {
  const issues = ParseResult.ArrayFormatter.formatErrorSync(error)
  const lines = issues.map((issue) => {
    const where = issue.path.length > 0 ? `${issue.path.map(String).join(".")}: ` : ""
    return `${where}${issue.message}`
  })
  return [...new Set(lines)].join("; ")
}

export interface DecodeContext {
  /** What the input is, as a person would name it: `--name "Web"`, `body of POST /vms`, a file path. */
  readonly subject: string
  readonly node?: NodeId | undefined
}

const invalid = (context: DecodeContext, error: ParseResult.ParseError) =>
  new InvalidArgument({
    subject: context.subject,
    message: `${context.subject}: ${describeParseError(error)}`,
    ...(context.node !== undefined ? { node: context.node } : {})
  })

/** Decodes `input` with `schema`; bad input fails with `InvalidArgument` naming the subject. */
export const decodeInput =
  <A, I>(schema: Schema.Schema<A, I, never>, context: DecodeContext) =>
  (input: unknown): Effect.Effect<A, InvalidArgument> =>
    Effect.mapError(Schema.decodeUnknown(schema, { errors: "all", onExcessProperty: "error" })(input), (e) =>
      invalid(context, e)
    )

/** The synchronous twin of `decodeInput`, for pure code paths. */
export const decodeInputEither =
  <A, I>(schema: Schema.Schema<A, I, never>, context: DecodeContext) =>
  (input: unknown): Either.Either<A, InvalidArgument> =>
    Either.mapLeft(Schema.decodeUnknownEither(schema, { errors: "all", onExcessProperty: "error" })(input), (e) =>
      invalid(context, e)
    )

/**
 * Constructor option for a domain class built inside the process from values that already passed
 * their schemas (the state machine updating a record, a handler wrapping a decoded body in a
 * command). Schema class constructors validate by default; on the write path that re-validates
 * every nested field of every record on every node (about 0.1 ms per VM record). Outside input
 * never takes this path: it is decoded with `decodeInput` or by the API's schemas first.
 */
export const trusted = { disableValidation: true } as const
