/**
 * `vm list` and `node list`: which page (`--limit`, `--after`, `--all`) and which records
 * (`--label`, and each command's own filters), asked of the server (`domain/ListQuery.ts`).
 *
 * By default a list shows its first `DefaultPageSize` records and says on stderr how to see the
 * rest; `--all` fetches every page, one request per `AllPageSize` records.
 */
import * as Options from "@effect/cli/Options"
import { Console, Effect, Option } from "effect"
import type { Constraint } from "../domain/VmSpec.js"
import type { BlixardError } from "../domain/Errors.js"
import { LabelSelector, MaxPageSize } from "../domain/ListQuery.js"
import { Schema } from "effect"
import { check, invalidArgument } from "./Validate.js"

export const DefaultPageSize = 100
const AllPageSize = 1_000

const PageSize = Schema.Int.pipe(Schema.between(1, MaxPageSize, { message: () => `a page holds 1 to ${MaxPageSize} records` }))

/** The paging and label options of a list of `what` ("VMs", "nodes"). */
export const listOptions = (what: string) => ({
  limit: Options.integer("limit").pipe(
    Options.withPseudoName("N"),
    Options.withDescription(`Show at most N ${what} (default ${DefaultPageSize}; at most ${MaxPageSize}).`),
    Options.optional
  ),
  all: Options.boolean("all").pipe(Options.withDescription(`Show all ${what} (fetched ${AllPageSize} at a time).`)),
  label: Options.text("label").pipe(
    Options.withPseudoName("KEY=VALUE|KEY!=VALUE"),
    Options.withDescription(`Only ${what} with (=) or without (!=) this label. Repeatable: all must hold.`),
    Options.repeated
  )
})

export interface ListArgs {
  readonly limit: Option.Option<number>
  readonly all: boolean
  readonly label: ReadonlyArray<string>
}

/** The checked `--limit` and `--label` values; every problem goes onto `problems`. */
export const checkListArgs = (args: ListArgs, problems: Array<string>) => {
  const limit = Option.isSome(args.limit) ? check(PageSize, args.limit.value, "--limit", problems) : DefaultPageSize
  const label: Array<Constraint> = []
  for (const text of args.label) {
    const selector = check(LabelSelector, text, "--label", problems)
    if (selector !== undefined) label.push(selector)
  }
  return { limit: limit ?? DefaultPageSize, all: args.all, ...(label.length > 0 ? { label } : {}) }
}

export const failOn = (problems: ReadonlyArray<string>) => (problems.length > 0 ? Effect.fail(invalidArgument(problems)) : Effect.void)

/**
 * Fetches what a list shows: one page of `limit` after `after` (one more is asked for, to know
 * whether more follow; if so, stderr says how to go on), or with `all` every page.
 */
export const fetchList = <A, K extends string | number>(options: {
  readonly what: string
  readonly limit: number
  readonly all: boolean
  readonly after: K | undefined
  readonly keyOf: (record: A) => K
  readonly fetch: (limit: number, after: K | undefined) => Effect.Effect<ReadonlyArray<A>, BlixardError>
}): Effect.Effect<ReadonlyArray<A>, BlixardError> =>
  Effect.gen(function* () {
    if (!options.all) {
      const page = yield* options.fetch(Math.min(options.limit + 1, MaxPageSize), options.after)
      if (page.length <= options.limit) return page
      const shown = page.slice(0, options.limit)
      const last = options.keyOf(shown[shown.length - 1]!)
      yield* Console.error(`(the first ${options.limit} ${options.what} shown; more follow: --after ${last} for the next page, --all for every one)`)
      return shown
    }
    const all: Array<A> = []
    let after = options.after
    for (;;) {
      const page = yield* options.fetch(AllPageSize, after)
      all.push(...page)
      if (page.length < AllPageSize) return all
      after = options.keyOf(page[page.length - 1]!)
    }
  })
