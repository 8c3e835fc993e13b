/**
 * A schema's parse error as a flat list of issues, each with the path it is about and a message a
 * person can read. The alternatives of a union (`Expected "a", actual "x"`, `Expected "b", …`)
 * become one issue: `one of "a", "b" (got "x")`.
 */
import { ParseResult } from "effect"

export interface Issue {
  readonly _tag: ParseResult.ArrayFormatterIssue["_tag"]
  readonly path: ReadonlyArray<PropertyKey>
  readonly message: string
}

const expectedPattern = /^Expected (.+), actual (.+)$/s

const undefinedPattern = /^Expected undefined, actual /

const startsWith = (path: ReadonlyArray<PropertyKey>, prefix: ReadonlyArray<PropertyKey>) =>
  prefix.length <= path.length && prefix.every((key, index) => String(path[index]) === String(key))

export const parseIssues = (error: ParseResult.ParseError): ReadonlyArray<Issue> => {
  const raw = ParseResult.ArrayFormatter.formatErrorSync(error)
  // An optional setting's encoded side is `A | undefined`: "Expected undefined" beside the real
  // problem at or below the same path is noise.
  const relevant = raw.filter(
    (issue) =>
      !undefinedPattern.test(issue.message) ||
      !raw.some((other) => !undefinedPattern.test(other.message) && startsWith(other.path, issue.path))
  )
  const groups = new Map<string, Array<ParseResult.ArrayFormatterIssue>>()
  for (const issue of relevant) {
    const key = JSON.stringify(issue.path.map(String))
    const group = groups.get(key)
    if (group === undefined) groups.set(key, [issue])
    else group.push(issue)
  }
  const issues: Array<Issue> = []
  for (const group of groups.values()) {
    const first = group[0]
    if (first === undefined) continue
    const matches = group.map((issue) => expectedPattern.exec(issue.message))
    const actual = matches[0]?.[2]
    if (group.length > 1 && matches.every((match) => match !== null && match[2] === actual)) {
      const alternatives = matches.map((match) => match?.[1] ?? "").filter((text) => text !== "undefined")
      const message =
        alternatives.length === 1 ? `Expected ${alternatives[0]}, actual ${actual}` : `one of ${alternatives.join(", ")} (got ${actual})`
      issues.push({ _tag: first._tag, path: first.path, message })
      continue
    }
    for (const message of new Set(group.map((issue) => issue.message))) {
      issues.push({ _tag: group.find((issue) => issue.message === message)?._tag ?? first._tag, path: first.path, message })
    }
  }
  return issues
}
