/**
 * `blixard cluster secret status`: per member the fingerprints it uses and accepts, then where the
 * members stand (what the operator waits for between a rotation's steps), as text and JSON.
 */
import { describe, expect, it } from "@effect/vitest"
import { formatSecretStatus } from "../../src/cli/ClusterCommand.js"
import { CallerSecret, MemberSecret, SecretFingerprint, SecretFingerprints, SecretStatus } from "../../src/domain/ClusterSecret.js"
import { NodeId } from "../../src/domain/NodeId.js"

const [old, next] = [SecretFingerprint.make("0123456789abcdef"), SecretFingerprint.make("fedcba9876543210")]
const member = (node: number, uses: SecretFingerprint, accepts: ReadonlyArray<SecretFingerprint>) =>
  new MemberSecret({ node: NodeId.make(node), address: `127.0.0.1:700${node}`, fingerprints: new SecretFingerprints({ uses, accepts, source: "file" }) })

describe("cluster secret status", () => {
  it("says which members use and accept each fingerprint, and who did not answer", () => {
    const host = new CallerSecret({ node: NodeId.make(7), uses: old, at: Date.UTC(2026, 0, 1) })
    const midway = new SecretStatus({ askedBy: NodeId.make(1), members: [member(1, next, [next, old]), member(2, old, [old, next]), member(3, old, [old, next])], hosts: [host] })
    const text = formatSecretStatus(midway, false)
    expect(text).toContain(`uses ${next}: node 1`)
    expect(text).toContain(`uses ${old}: nodes 2, 3`)
    expect(text).toContain(`accepts ${next}: every member`)
    expect(text).not.toContain("Every member uses the same secret")
    expect(text).toMatch(new RegExp(`7 +${old} +2026-01-01T00:00:00.000Z`))

    const done = new SecretStatus({ askedBy: NodeId.make(1), members: [member(1, next, [next]), member(2, next, [next])], hosts: [] })
    expect(formatSecretStatus(done, false)).toContain("Every member uses the same secret and accepts the same ones.")

    const silent = new SecretStatus({ askedBy: NodeId.make(1), members: [member(1, next, [next]), new MemberSecret({ node: NodeId.make(2), address: "127.0.0.1:7002", problem: "Timeout: no answer" })], hosts: [] })
    const said = formatSecretStatus(silent, false)
    expect(said).toContain("no answer: Timeout: no answer")
    expect(said).toContain("1 member(s) did not answer")
    expect(JSON.parse(formatSecretStatus(midway, true)).members[1]).toEqual({ node: 2, address: "127.0.0.1:7002", fingerprints: { uses: old, accepts: [old, next], source: "file" } })
  })
})
