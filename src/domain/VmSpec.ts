import { Schema } from "effect"
import { trusted } from "./Decode.js"
import { Labels, LabelKey, LabelValue } from "./Labels.js"
import { MemoryMiB, Vcpus } from "./Resources.js"
import { VmName } from "./VmName.js"

/** The largest inline microvm.nix module that is replicated (it lives in every node's log). */
export const MaxInlineConfigBytes = 64 * 1024

/** The VM is an inline microvm.nix NixOS module; Blixard generates a flake around it. */
export class InlineConfig extends Schema.TaggedClass<InlineConfig>()("Inline", {
  module: Schema.String.pipe(
    Schema.minLength(1, { message: () => "the VM's config file is empty" }),
    Schema.maxLength(MaxInlineConfigBytes, {
      message: () => `a VM config is at most ${MaxInlineConfigBytes} bytes; put larger configs in a flake (--flake)`
    })
  )
}) {}

/**
 * A flake output holding the VM: `FLAKE#NAME` builds
 * `FLAKE#nixosConfigurations.NAME.config.microvm.declaredRunner`.
 */
export const FlakeRef = Schema.String.pipe(
  Schema.maxLength(4096),
  Schema.pattern(/^[^\s#]+#[A-Za-z0-9_.-]+$/, {
    message: () => "a flake reference is FLAKE#NAME, e.g. github:me/vms#web or /etc/vms#web (no spaces)"
  })
,
  // `nix` would read a leading '-' as an option of its own (e.g. `--option …`).
  Schema.filter((ref) => !ref.startsWith("-") || "a flake reference must not start with '-'")
)
export class FlakeConfig extends Schema.TaggedClass<FlakeConfig>()("Flake", { ref: FlakeRef }) {}

/** A runner already built: a directory with `bin/microvm-run`, present on the hosting node. */
export class RunnerConfig extends Schema.TaggedClass<RunnerConfig>()("Runner", {
  path: Schema.String.pipe(
    Schema.maxLength(4096),
    Schema.pattern(/^\/[^\0]*$/, { message: () => "a runner path must be absolute (it is resolved on the hosting node)" })
  )
}) {}

export const ConfigSource = Schema.Union(InlineConfig, FlakeConfig, RunnerConfig)
export type ConfigSource = typeof ConfigSource.Type

/** A placement constraint on node labels: `key=value` (must equal) or `key!=value` (must not). */
export class Constraint extends Schema.Class<Constraint>("Constraint")({
  key: LabelKey,
  op: Schema.Literal("eq", "neq"),
  value: LabelValue
}) {}

export const parseConstraint = (text: string): { key: string; op: "eq" | "neq"; value: string } | undefined => {
  const neq = text.indexOf("!=")
  if (neq > 0) return { key: text.slice(0, neq), op: "neq", value: text.slice(neq + 2) }
  const eq = text.indexOf("=")
  return eq > 0 ? { key: text.slice(0, eq), op: "eq", value: text.slice(eq + 1) } : undefined
}

export const RestartPolicy = Schema.Literal("always", "on-failure", "never")
export type RestartPolicy = typeof RestartPolicy.Type

/**
 * What a VM spec is when a field is not given: the one place these defaults live. The CLI's flags
 * and the REST API's bodies both leave out what they do not set, and get these.
 */
export const VmSpecDefaults = {
  vcpus: 1,
  memoryMiB: 512,
  restartPolicy: "on-failure"
} as const satisfies { vcpus: number; memoryMiB: number; restartPolicy: RestartPolicy }

/**
 * Whether a VM is started once placed when its creation does not say: `vm create` without
 * `--no-start` and a `POST /v1/vms` body without `start` both take this.
 */
export const StartOnCreate = true

/** A creation's `start` as a body carries it; absent means `StartOnCreate` (see `startOf`). */
export const CreateStart = Schema.optionalWith(
  Schema.Boolean.annotations({
    default: StartOnCreate,
    description: "Start the VM once placed (default true, as `vm create`); false: create it stopped (`vm create --no-start`)."
  }),
  { exact: true }
)

/**
 * A creation's `start`, its absence read as `StartOnCreate`. (Not a decoding default: that would
 * make the body a transformation, whose failures lose the body's own message.)
 */
export const startOf = (start: boolean | undefined): boolean => start ?? StartOnCreate

/** What `vm update` may change (absent: kept); at least one field. */
export const VmChanges = Schema.Struct({
  source: Schema.optionalWith(ConfigSource, { exact: true }),
  vcpus: Schema.optionalWith(Vcpus, { exact: true }),
  memoryMiB: Schema.optionalWith(MemoryMiB, { exact: true }),
  restartPolicy: Schema.optionalWith(RestartPolicy, { exact: true })
})
export type VmChanges = typeof VmChanges.Type

/** Everything a user declares about a VM. */
export class VmSpec extends Schema.Class<VmSpec>("VmSpec")({
  name: VmName,
  source: ConfigSource,
  vcpus: Vcpus.pipe(Schema.propertySignature, Schema.withConstructorDefault(() => VmSpecDefaults.vcpus)),
  memoryMiB: MemoryMiB.pipe(Schema.propertySignature, Schema.withConstructorDefault(() => VmSpecDefaults.memoryMiB)),
  labels: Labels.pipe(Schema.propertySignature, Schema.withConstructorDefault(() => ({}))),
  constraints: Schema.Array(Constraint).pipe(Schema.propertySignature, Schema.withConstructorDefault(() => [])),
  /** VMs sharing an anti-affinity group are placed on different nodes when possible. */
  antiAffinity: Schema.optionalWith(LabelValue, { exact: true }),
  restartPolicy: RestartPolicy.pipe(Schema.propertySignature, Schema.withConstructorDefault(() => VmSpecDefaults.restartPolicy))
}) {}

/**
 * A VM spec as a request body carries it: only `name` and `source` are required; a field left out
 * takes `VmSpecDefaults` (as `vm create` without the flag). Decodes to a `VmSpec`, which the state
 * keeps with every field (so its JSON is written without encoding, see `Json.ts`).
 */
export const VmSpecBody = Schema.transform(
  Schema.Struct({
    name: VmSpec.fields.name,
    source: VmSpec.fields.source,
    vcpus: Schema.optionalWith(Vcpus, { exact: true }),
    memoryMiB: Schema.optionalWith(MemoryMiB, { exact: true }),
    labels: Schema.optionalWith(Labels, { exact: true }),
    constraints: Schema.optionalWith(Schema.Array(Constraint), { exact: true }),
    antiAffinity: VmSpec.fields.antiAffinity,
    restartPolicy: Schema.optionalWith(RestartPolicy, { exact: true })
  }),
  Schema.typeSchema(VmSpec),
  {
    strict: true,
    // The constructor fills in what is absent, from `VmSpecDefaults`; the fields passed the struct
    // above, so it does not check them again (that check was most of a creation's decoding).
    decode: (fields) => new VmSpec(fields, trusted),
    encode: (spec) => ({ ...spec })
  }
).annotations({ identifier: "VmSpecBody", description: `A VM spec; only name and source are required (default vcpus ${VmSpecDefaults.vcpus}, memoryMiB ${VmSpecDefaults.memoryMiB}, no labels or constraints, restartPolicy ${VmSpecDefaults.restartPolicy}).` })
