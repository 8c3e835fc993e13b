/**
 * Tailscale discovery's pure parts: decoding `tailscale status --json` (the documented
 * `ipnstate.Status`, unknown fields ignored), this machine's address, and which peers are asked.
 * The daemon running a fake `tailscale` binary is test/e2e/tailscale.test.ts.
 */
import { describe, expect, it } from "@effect/vitest"
import { Either } from "effect"
import { NodeId } from "../../src/domain/NodeId.js"
import type { NodeConfig } from "../../src/node/Config.js"
import { resolveNodeSettings } from "../../src/node/Settings.js"
import { decodeStatus, selectPeers, selfIp, selfTagged, type TailscaleStatus } from "../../src/node/Tailscale.js"

const settings = { node: NodeId.make(1), binary: "tailscale" }

/** A status document as tailscaled prints it (trimmed, with fields this code does not read). */
const document = {
  Version: "1.76.6-t1234",
  TUN: true,
  BackendState: "Running",
  AuthURL: "",
  TailscaleIPs: ["100.64.0.1", "fd7a:115c:a1e0::1"],
  Self: {
    ID: "n1",
    PublicKey: "nodekey:aa",
    HostName: "alpha",
    DNSName: "alpha.tail1234.ts.net.",
    OS: "linux",
    UserID: 1,
    TailscaleIPs: ["100.64.0.1", "fd7a:115c:a1e0::1"],
    Tags: ["tag:blixard"],
    Online: true,
    ExitNode: false
  },
  Health: [],
  MagicDNSSuffix: "tail1234.ts.net",
  CurrentTailnet: { Name: "example.org", MagicDNSSuffix: "tail1234.ts.net", MagicDNSEnabled: true },
  Peer: {
    "nodekey:bb": { HostName: "bravo", DNSName: "bravo.tail1234.ts.net.", TailscaleIPs: ["100.64.0.2", "fd7a:115c:a1e0::2"], Tags: ["tag:blixard"], Online: true, Relay: "fra" },
    "nodekey:cc": { HostName: "charlie", TailscaleIPs: ["100.64.0.10"], Tags: ["tag:web", "tag:blixard"], Online: true },
    // Not online, not tagged, tagged with another tag, IPv6 only, no tags at all (omitted), no IPs.
    "nodekey:dd": { HostName: "delta", TailscaleIPs: ["100.64.0.4"], Tags: ["tag:blixard"], Online: false },
    "nodekey:ee": { HostName: "echo", TailscaleIPs: ["100.64.0.5"], Tags: null, Online: true },
    "nodekey:ff": { HostName: "foxtrot", TailscaleIPs: ["100.64.0.6"], Tags: ["tag:blixard-old"], Online: true },
    "nodekey:gg": { HostName: "golf", TailscaleIPs: ["fd7a:115c:a1e0::7"], Tags: ["tag:blixard"], Online: true },
    "nodekey:hh": { HostName: "hotel", Online: true },
    "nodekey:ii": { HostName: "", DNSName: "india.tail1234.ts.net.", TailscaleIPs: ["100.64.0.9"], Tags: ["tag:blixard"], Online: true }
  },
  User: { "1": { ID: 1, LoginName: "ops@example.org" } }
}

const decoded = (value: unknown): TailscaleStatus => {
  const result = decodeStatus(JSON.stringify(value), settings)
  if (Either.isLeft(result)) throw new Error(result.left.message)
  return result.right
}

describe("tailscale status --json", () => {
  it("decodes the documented shape, ignoring the fields it does not use", () => {
    const status = decoded(document)
    expect(status.BackendState).toBe("Running")
    expect(status.Self?.HostName).toBe("alpha")
    expect(Object.keys(status.Peer ?? {})).toHaveLength(8)
    expect(status).not.toHaveProperty("Version")
  })

  it("selects the online peers with the tag and an IPv4 address, sorted by address, never itself", () => {
    const peers = selectPeers(decoded(document), "tag:blixard", "100.64.0.1")
    expect(peers).toEqual([
      { name: "bravo", ip: "100.64.0.2" },
      { name: "india.tail1234.ts.net", ip: "100.64.0.9" },
      { name: "charlie", ip: "100.64.0.10" }
    ])
    expect(selectPeers(decoded(document), "tag:web", "100.64.0.1")).toEqual([{ name: "charlie", ip: "100.64.0.10" }])
    // A peer listed with this machine's own address (a stale entry) is not asked.
    expect(selectPeers(decoded(document), "tag:blixard", "100.64.0.2").map((p) => p.ip)).toEqual(["100.64.0.9", "100.64.0.10"])
  })

  it("reads a tailnet of one machine (Peer null or absent) as no peers", () => {
    expect(selectPeers(decoded({ ...document, Peer: null }), "tag:blixard", "100.64.0.1")).toEqual([])
    const { Peer: _, ...withoutPeers } = document
    expect(selectPeers(decoded(withoutPeers), "tag:blixard", "100.64.0.1")).toEqual([])
  })

  it("gives this machine's first IPv4 address, and whether it carries the tag", () => {
    const status = decoded({ ...document, Self: { ...document.Self, TailscaleIPs: ["fd7a:115c:a1e0::1", "100.64.0.1"] } })
    expect(selfIp(status, settings)).toEqual(Either.right("100.64.0.1"))
    expect(selfTagged(status, "tag:blixard")).toBe(true)
    expect(selfTagged(status, "tag:other")).toBe(false)
  })

  it("says what to do when tailscaled is not logged in, stopped, or this machine has no IPv4 address", () => {
    const problem = (value: unknown) => {
      const result = selfIp(decoded(value), settings)
      if (Either.isRight(result)) throw new Error(`expected a problem, got ${result.right}`)
      expect(result.left.transient).toBe(true)
      expect(result.left.error.code).toBe("BLX_DISCOVERY_FAILED")
      return result.left.error.message
    }
    expect(problem({ ...document, BackendState: "NeedsLogin", Self: { ...document.Self, TailscaleIPs: null } })).toContain("tailscale up")
    expect(problem({ ...document, BackendState: "Stopped" })).toContain("tailscale up")
    expect(problem({ ...document, BackendState: "Starting" })).toContain("\"Starting\"")
    expect(problem({ ...document, Self: { ...document.Self, TailscaleIPs: ["fd7a:115c:a1e0::1"] } })).toContain("tailscale ip -4")
    expect(problem({ ...document, Self: null })).toContain("no IPv4")
  })

  it("refuses what is not JSON, or not the status document, naming the binary", () => {
    for (const text of ["", "tailscale: command not found", "{\"Self\": ", JSON.stringify({ Peer: ["x"] }), JSON.stringify({ Self: { Online: "yes" } }), "[]"]) {
      const result = decodeStatus(text, settings)
      expect(Either.isLeft(result), text).toBe(true)
      if (Either.isLeft(result)) {
        expect(result.left.code).toBe("BLX_DISCOVERY_FAILED")
        expect(result.left.message).toContain("tailscale status --json")
      }
    }
  })
})

describe("discovery settings", () => {
  const base = { id: 1, bind: "0.0.0.0:7001" }
  const resolve = (flags: Record<string, unknown>, env: Record<string, string> = {}) =>
    resolveNodeSettings(undefined, env, { ...base, ...flags })
  const ok = (result: ReturnType<typeof resolve>): NodeConfig => {
    if (Either.isLeft(result)) throw new Error(result.left.message)
    return result.right
  }
  const problem = (result: ReturnType<typeof resolve>): string => {
    if (Either.isRight(result)) throw new Error(`expected a problem, got ${JSON.stringify(result.right)}`)
    expect(result.left.code).toBe("BLX_CONFIG_INVALID")
    return result.left.message
  }

  it("takes discovery, bootstrap, tag and binary from flags, the environment and the file; unset stays unset", () => {
    expect(ok(resolve({ discovery: "tailscale", bootstrap: true, tailscaleTag: "tag:vms", tailscaleBinary: "/opt/ts" }))).toMatchObject({
      discovery: "tailscale",
      bootstrap: true,
      tailscaleTag: "tag:vms",
      tailscaleBinary: "/opt/ts"
    })
    expect(ok(resolve({}, { BLIXARD_DISCOVERY: "tailscale", BLIXARD_BOOTSTRAP: "1", BLIXARD_TAILSCALE_TAG: "tag:a-b" }))).toMatchObject({
      discovery: "tailscale",
      bootstrap: true,
      tailscaleTag: "tag:a-b"
    })
    const file = { path: "/etc/blixard.json", contents: JSON.stringify({ ...base, discovery: "tailscale", bootstrap: false }) }
    expect(ok(resolveNodeSettings(file, {}, {}))).toMatchObject({ discovery: "tailscale", bootstrap: false })
    const plain = ok(resolve({}))
    for (const key of ["discovery", "bootstrap", "tailscaleTag", "tailscaleBinary"]) expect(plain).not.toHaveProperty(key)
  })

  it("refuses bad values, naming where they came from", () => {
    expect(problem(resolve({ discovery: "mdns" }))).toContain("--discovery")
    expect(problem(resolve({ tailscaleTag: "blixard" }))).toMatch(/--tailscale-tag "blixard": a Tailscale tag/)
    expect(problem(resolve({}, { BLIXARD_BOOTSTRAP: "yes" }))).toContain("BLIXARD_BOOTSTRAP \"yes\": true or false")
  })

  it("refuses static peers with Tailscale discovery, and bootstrap without it", () => {
    expect(problem(resolve({ discovery: "tailscale", peers: ["2:10.0.0.2:7001"] }))).toMatch(/--peer.*discovery is "tailscale"/)
    expect(problem(resolve({ bootstrap: true }))).toContain("bootstrap applies to tailscale discovery only")
  })
})
