import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, Either, FastCheck as fc, Schema } from "effect"
import {
  Command,
  CommandEnvelope,
  HostPort,
  MaxInlineConfigBytes,
  NodeId,
  NodeInfo,
  VmName,
  VmRecord,
  VmSpec,
  VmStatus
} from "../../src/domain/index.js"
import { decodeInputEither } from "../../src/domain/Decode.js"
import * as Errors from "../../src/domain/Errors.js"
import { ConfState, Entry, HardState, Snapshot } from "../../src/raft/Types.js"

/** Encode, go through JSON text, decode: the value must come back equal. */
const roundTrip = <A, I>(schema: Schema.Schema<A, I, never>, runs = 200) =>
  fc.assert(
    fc.property(Arbitrary.make(schema), (value) => {
      const json = JSON.stringify(Schema.encodeSync(schema)(value))
      const back = Schema.decodeUnknownSync(schema)(JSON.parse(json))
      expect(back).toEqual(value)
    }),
    { numRuns: runs }
  )

describe("every schema round-trips through JSON", () => {
  const cases: ReadonlyArray<readonly [string, Schema.Schema<any, any, never>]> = [
    ["NodeId", NodeId],
    ["VmName", VmName],
    ["HostPort", HostPort],
    ["VmSpec", VmSpec],
    ["VmStatus", VmStatus],
    ["VmRecord", VmRecord],
    ["NodeInfo", NodeInfo],
    ["Command", Command],
    ["CommandEnvelope", CommandEnvelope],
    ["Entry", Entry],
    ["HardState", HardState],
    ["ConfState", ConfState],
    ["Snapshot", Snapshot],
    ["BlixardError", Errors.BlixardError]
  ]
  for (const [name, schema] of cases) {
    it(name, () => roundTrip(schema, name === "VmSpec" || name === "Command" ? 100 : 200))
  }
})

/** Decodes `input` as an outside input and returns the refusal (it must be refused). */
const refuse = <A, I>(schema: Schema.Schema<A, I, never>, input: unknown) => {
  const result = decodeInputEither(schema, { subject: "input" })(input)
  if (Either.isRight(result)) throw new Error(`accepted ${JSON.stringify(input)}`)
  return result.left
}

describe("invalid values are refused with BLX_INVALID_ARGUMENT and a message that says why", () => {
  const spec = (over: Record<string, unknown>) => ({
    name: "web",
    source: { _tag: "Runner", path: "/nix/store/abc-runner" },
    vcpus: 2,
    memoryMiB: 1024,
    labels: {},
    constraints: [],
    restartPolicy: "always",
    ...over
  })

  const cases: ReadonlyArray<readonly [string, Schema.Schema<any, any, never>, unknown, RegExp]> = [
    ["node id zero", NodeId, 0, /positive integer/],
    ["negative node id", NodeId, -3, /positive integer/],
    ["fractional node id", NodeId, 1.5, /integer/],
    ["node id as text", NodeId, "1", /Expected number/],
    ["uppercase VM name", VmName, "Web", /lowercase DNS label/],
    ["VM name with underscore", VmName, "my_vm", /lowercase DNS label/],
    ["VM name with a dot", VmName, "a.b", /lowercase DNS label/],
    ["VM name starting with '-'", VmName, "-web", /lowercase DNS label/],
    ["VM name ending with '-'", VmName, "web-", /lowercase DNS label/],
    ["empty VM name", VmName, "", /must not be empty/],
    ["64-character VM name", VmName, "a".repeat(64), /at most 63/],
    ["VM name with a slash (path traversal)", VmName, "../etc", /lowercase DNS label/],
    ["address without port", HostPort, "127.0.0.1", /HOST:PORT/],
    ["port 0", HostPort, "127.0.0.1:0", /1 to 65535/],
    ["port 70000", HostPort, "127.0.0.1:70000", /1 to 65535/],
    ["zero vcpus", VmSpec, spec({ vcpus: 0 }), /vcpus/],
    ["too little memory", VmSpec, spec({ memoryMiB: 8 }), /memory/],
    ["relative runner path", VmSpec, spec({ source: { _tag: "Runner", path: "result" } }), /absolute/],
    ["flake reference without #", VmSpec, spec({ source: { _tag: "Flake", ref: "github:me/vms" } }), /FLAKE#NAME/],
    [
      "oversized inline config",
      VmSpec,
      spec({ source: { _tag: "Inline", module: "x".repeat(MaxInlineConfigBytes + 1) } }),
      /at most 65536 bytes/
    ],
    ["empty inline config", VmSpec, spec({ source: { _tag: "Inline", module: "" } }), /empty/],
    ["bad label key", VmSpec, spec({ labels: { "bad key": "x" } }), /label key/],
    ["bad label value", VmSpec, spec({ labels: { zone: "a b" } }), /label value/],
    ["unknown restart policy", VmSpec, spec({ restartPolicy: "sometimes" }), /restartPolicy/],
    ["unknown field", VmSpec, spec({ gpu: true }), /gpu/],
    ["unknown command", Command, { _tag: "FormatDisk", name: "web" }, /_tag/]
  ]
  for (const [name, schema, input, why] of cases) {
    it(name, () => {
      const error = refuse(schema, input)
      expect(error.code).toBe("BLX_INVALID_ARGUMENT")
      expect(error.subject).toBe("input")
      expect(error.message).toMatch(why)
    })
  }

  it("reports every problem of one input at once, with its path", () => {
    const error = refuse(VmSpec, spec({ name: "Web", vcpus: 0 }))
    expect(error.message).toMatch(/name: .*lowercase DNS label/)
    expect(error.message).toMatch(/vcpus: .*1 to 1024/)
  })

  it("property: any string outside the DNS-label alphabet is not a VM name", () =>
    fc.assert(
      fc.property(
        fc.string({ minLength: 1, maxLength: 20 }).filter((s) => /[^a-z0-9-]/.test(s)),
        (s) => {
          expect(refuse(VmName, s).code).toBe("BLX_INVALID_ARGUMENT")
        }
      )
    ))
})

describe("errors", () => {
  it("carry a stable code, survive the wire and format as CODE: message (node N)", () => {
    const error = new Errors.VmNotFound({ message: 'no VM named "web"', subject: "web", node: NodeId.make(2) })
    expect(error.code).toBe("BLX_VM_NOT_FOUND")
    const wire = JSON.parse(JSON.stringify(Schema.encodeSync(Errors.BlixardError)(error)))
    expect(wire).toEqual({ _tag: "VmNotFound", code: "BLX_VM_NOT_FOUND", message: 'no VM named "web"', subject: "web", node: 2 })
    const back = Schema.decodeUnknownSync(Errors.BlixardError)(wire)
    expect(back).toBeInstanceOf(Errors.VmNotFound)
    expect(Errors.formatError(back)).toBe('BLX_VM_NOT_FOUND: no VM named "web" (node 2)')
  })

  it("a wire error whose code does not match its tag is refused", () => {
    const bad = { _tag: "VmNotFound", code: "BLX_TIMEOUT", message: "x" }
    expect(Either.isLeft(Schema.decodeUnknownEither(Errors.BlixardError)(bad))).toBe(true)
  })
})
