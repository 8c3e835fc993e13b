/**
 * The process environment as a service, so commands read `BLIXARD_*` variables through the context
 * and tests hand them a record instead of mutating `process.env`.
 */
import { Context, Layer } from "effect"

export class ProcessEnv extends Context.Tag("blixard/cli/ProcessEnv")<
  ProcessEnv,
  Readonly<Record<string, string | undefined>>
>() {
  /** The real environment of this process. */
  static readonly layer = Layer.sync(ProcessEnv, () => process.env)
  static readonly layerRecord = (env: Readonly<Record<string, string | undefined>>) => Layer.succeed(ProcessEnv, env)
}
