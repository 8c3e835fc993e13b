/**
 * A small budget of the fuzz benchmark (`npm run bench -- fuzz`, bench/fuzz.ts) against real nodes:
 * the API (no 5xx, no state changed by a refused request, the node still up), and the peer
 * endpoint (bench/peerFuzz.ts: no crash, no broken handshake accepted, no Raft state changed, the
 * node still takes writes); then against a node serving TLS: TLS itself (bench/tlsFuzz.ts: broken
 * ClientHellos, plaintext, bad peer certificates), the API over HTTPS and frames behind mutual TLS.
 */
import { afterAll, describe, expect, it } from "vitest"
import { fuzzApi, type FuzzNode, peerTarget, startFuzzNode } from "../../bench/fuzz.js"
import { fuzzPeers } from "../../bench/peerFuzz.js"
import { badCertificates, fuzzTls } from "../../bench/tlsFuzz.js"
import { bin } from "./harness.js"

const runs = Number(process.env.FUZZ_RUNS ?? 300)

describe("API fuzz (small budget)", () => {
  let node: FuzzNode | undefined
  afterAll(async () => {
    await node?.stop()
  })

  it(`${runs} generated requests: no 5xx, no state change from a refused request, the node stays up`, { timeout: 300_000 }, async () => {
    node = await startFuzzNode(bin)
    const result = await fuzzApi(node, runs, Number(process.env.FUZZ_SEED ?? Date.now() % 100_000))
    const report = JSON.stringify(result, null, 2)
    expect(result.failures, report).toEqual([])
    expect(result.serverErrors, report).toBe(0)
    expect(result.refusedThatChangedState, report).toBe(0)
    expect(result.nodeAlive, report).toBe(true)
    // The inputs reach every kind of refusal, and some get through.
    for (const status of ["400", "401", "403", "404"]) expect(result.byStatus[status] ?? 0, report).toBeGreaterThan(0)
    expect(Object.entries(result.byStatus).some(([status, n]) => status.startsWith("2") && n > 0), report).toBe(true)
  })
})

const peerRuns = Number(process.env.FUZZ_PEER_RUNS ?? 1500)

describe("peer endpoint fuzz (small budget)", () => {
  let node: FuzzNode | undefined
  afterAll(async () => {
    await node?.stop()
  })

  it(`${peerRuns} generated handshakes, bytes and frames: no crash, nothing broken accepted, no state change, writes still taken`, { timeout: 300_000 }, async () => {
    node = await startFuzzNode(bin)
    const result = await fuzzPeers(await peerTarget(node), peerRuns, Number(process.env.FUZZ_SEED ?? Date.now() % 100_000))
    const report = JSON.stringify(result, null, 2)
    expect(result.failures, report).toEqual([])
    expect(result.nodeAlive, report).toBe(true)
    expect(result.acceptedBadHandshakes, report).toBe(0)
    expect(result.stateChanges, report).toBe(0)
    expect(result.servesWrites, report).toBe(true)
    // Every kind of input was thrown, handshakes were refused and frames were read.
    for (const kind of ["handshake", "replay", "raw", "wsHeader", "frame"]) expect(result.byKind[kind] ?? 0, report).toBeGreaterThan(0)
    expect(result.refusedHandshakes, report).toBeGreaterThan(0)
    expect(result.framesAcknowledged, report).toBeGreaterThan(0)
  })
})

const tlsRuns = Number(process.env.FUZZ_TLS_RUNS ?? 300)
const tlsApiRuns = Number(process.env.FUZZ_TLS_API_RUNS ?? 150)
const tlsPeerRuns = Number(process.env.FUZZ_TLS_PEER_RUNS ?? 300)

describe("TLS fuzz (small budget): a node serving TLS, as nodes do by default", () => {
  let node: FuzzNode | undefined
  afterAll(async () => {
    await node?.stop()
  })
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 100_000)

  it(`${tlsRuns} ClientHellos, plaintext requests and bad peer certificates: no crash, none accepted, no state change`, { timeout: 300_000 }, async () => {
    node = await startFuzzNode(bin, { tls: true })
    const result = await fuzzTls(await peerTarget(node), await badCertificates(node.tls!.clusterId), tlsRuns, seed)
    const report = JSON.stringify(result, null, 2)
    expect(result.failures, report).toEqual([])
    expect(result.nodeAlive, report).toBe(true)
    expect(result.acceptedBadCertificates, report).toBe(0)
    expect(result.plaintextAnswered, report).toBe(0)
    expect(result.stateChanges, report).toBe(0)
    expect(result.servesWrites, report).toBe(true)
    for (const kind of ["clientHello", "plaintext", "peerCertificate"]) expect(result.byKind[kind] ?? 0, report).toBeGreaterThan(0)
    expect(result.refusedCertificates, report).toBe(result.byKind.peerCertificate)
  })

  it(`${tlsApiRuns} generated requests over HTTPS: no 5xx, no state change from a refused request, the node stays up`, { timeout: 300_000 }, async () => {
    node ??= await startFuzzNode(bin, { tls: true })
    const result = await fuzzApi(node, tlsApiRuns, seed)
    const report = JSON.stringify(result, null, 2)
    expect(result.failures, report).toEqual([])
    expect(result.serverErrors, report).toBe(0)
    expect(result.refusedThatChangedState, report).toBe(0)
    expect(result.nodeAlive, report).toBe(true)
    for (const status of ["400", "401", "404"]) expect(result.byStatus[status] ?? 0, report).toBeGreaterThan(0)
  })

  it(`${tlsPeerRuns} handshakes, bytes and frames behind mutual TLS: nothing broken accepted, no state change, writes still taken`, { timeout: 300_000 }, async () => {
    node ??= await startFuzzNode(bin, { tls: true })
    const result = await fuzzPeers(await peerTarget(node), tlsPeerRuns, seed)
    const report = JSON.stringify(result, null, 2)
    expect(result.failures, report).toEqual([])
    expect(result.nodeAlive, report).toBe(true)
    expect(result.acceptedBadHandshakes, report).toBe(0)
    expect(result.stateChanges, report).toBe(0)
    expect(result.servesWrites, report).toBe(true)
    expect(result.framesAcknowledged, report).toBeGreaterThan(0)
    expect(result.refusedHandshakes, report).toBeGreaterThan(0)
  })
})
