/**
 * `toJson` writes what encoding would: for every schema it takes the `JSON.stringify` shortcut on
 * (the command envelope, the records, the errors, every success of the API), random valid values
 * (from the schemas' own arbitraries) come out as the same JSON as encoding them first; schemas with
 * a real transformation are recognised and encoded.
 */
import { HttpApi, HttpApiSchema } from "@effect/platform"
import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, FastCheck, Schema } from "effect"
import { BlixardApi } from "../../src/api/Api.js"
import { CommandEnvelope } from "../../src/domain/Command.js"
import { BlixardError } from "../../src/domain/Errors.js"
import { isEncodeTransparent, toJson } from "../../src/domain/Json.js"
import { NodeInfo } from "../../src/domain/NodeInfo.js"
import { VmRecord } from "../../src/domain/VmStatus.js"

const sameAsEncoding = <A, I>(name: string, schema: Schema.Schema<A, I, never>, runs = 200) => {
  const write = toJson(schema)
  const encode = Schema.encodeSync(schema)
  FastCheck.assert(
    FastCheck.property(Arbitrary.make(schema), (value) => {
      expect(JSON.parse(write(value)), name).toEqual(JSON.parse(JSON.stringify(encode(value))))
    }),
    { numRuns: runs }
  )
}

describe("toJson", () => {
  it("takes the shortcut for the command envelope, the records and the errors, and writes what encoding writes", () => {
    for (const [name, schema] of [
      ["CommandEnvelope", CommandEnvelope],
      ["VmRecord", VmRecord],
      ["NodeInfo", NodeInfo],
      ["BlixardError", BlixardError]
    ] as const) {
      expect(isEncodeTransparent(schema.ast), name).toBe(true)
      sameAsEncoding(name, schema as unknown as Schema.Schema<unknown, unknown, never>)
    }
  })

  it("every success the API answers is written as encoding would write it", () => {
    const members = new Set<Schema.Schema.Any>()
    HttpApi.reflect(BlixardApi, {
      onGroup: () => {},
      onEndpoint: ({ endpoint }) => HttpApiSchema.deunionize(members, endpoint.successSchema)
    })
    expect(members.size).toBeGreaterThan(5)
    for (const member of members) {
      if (HttpApiSchema.isVoid(member.ast)) continue
      expect(isEncodeTransparent(member.ast), String(member)).toBe(true)
      sameAsEncoding(String(member), member as Schema.Schema<unknown, unknown, never>, 50)
    }
  })

  it("encodes first when a schema transforms values", () => {
    const WithDate = Schema.Struct({ at: Schema.Date, n: Schema.Number })
    const WithDefault = Schema.Struct({ n: Schema.optionalWith(Schema.Number, { default: () => 1 }) })
    const FromString = Schema.Struct({ n: Schema.NumberFromString })
    class Holder extends Schema.Class<Holder>("Holder")({ inner: FromString }) {}
    for (const schema of [WithDate, WithDefault, FromString, Holder, Schema.Array(FromString), Schema.Union(Schema.String, FromString)]) {
      expect(isEncodeTransparent(schema.ast)).toBe(false)
    }
    expect(JSON.parse(toJson(FromString)({ n: 5 }))).toEqual({ n: "5" })
    expect(JSON.parse(toJson(WithDate)({ at: new Date(0), n: 1 }))).toEqual({ at: "1970-01-01T00:00:00.000Z", n: 1 })
    sameAsEncoding("Holder", Holder)
  })

  it("handles recursive schemas", () => {
    interface Tree {
      readonly label: string
      readonly children: ReadonlyArray<Tree>
    }
    const Tree: Schema.Schema<Tree> = Schema.Struct({ label: Schema.String, children: Schema.Array(Schema.suspend(() => Tree)) })
    expect(isEncodeTransparent(Tree.ast)).toBe(true)
    sameAsEncoding("Tree", Tree, 50)
  })
})
