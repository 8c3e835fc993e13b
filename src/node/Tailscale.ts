/**
 * Peers from Tailscale: what `tailscale status --json` says about this machine (`Self`) and the
 * others of the tailnet (`Peer`), in the shape Tailscale documents (`ipnstate.Status`). Only the
 * fields used here are decoded; the rest of the (large, growing) document is ignored.
 *
 * A peer is a candidate when it is online, carries the configured tag (an ACL tag such as
 * `tag:blixard`, which only the tailnet's admins can grant) and has an IPv4 tailnet address; its
 * Blixard address is that IPv4 address and the port every member shares (the port of `bind`).
 */
import { Effect, Either, ParseResult, Schema } from "effect"
import { execFile } from "node:child_process"
import { DiscoveryFailed } from "../domain/Errors.js"
import type { NodeId } from "../domain/NodeId.js"

const Strings = Schema.optionalWith(Schema.NullOr(Schema.Array(Schema.String)), { exact: true })

/** `ipnstate.PeerStatus`, the fields used here. */
export const PeerStatus = Schema.Struct({
  HostName: Schema.optionalWith(Schema.String, { exact: true }),
  DNSName: Schema.optionalWith(Schema.String, { exact: true }),
  TailscaleIPs: Strings,
  Tags: Strings,
  Online: Schema.optionalWith(Schema.Boolean, { exact: true })
})
export type PeerStatus = typeof PeerStatus.Type

/** `ipnstate.Status`, the fields used here. `Peer` is null (or absent) on a tailnet of one machine. */
export const TailscaleStatus = Schema.Struct({
  BackendState: Schema.optionalWith(Schema.String, { exact: true }),
  Self: Schema.optionalWith(Schema.NullOr(PeerStatus), { exact: true }),
  Peer: Schema.optionalWith(Schema.NullOr(Schema.Record({ key: Schema.String, value: PeerStatus })), { exact: true })
})
export type TailscaleStatus = typeof TailscaleStatus.Type

/** Where discovery runs `tailscale` and which peers it keeps. */
export interface TailscaleSettings {
  readonly node: NodeId
  readonly binary: string
  readonly tag: string
  /** How long one `tailscale status --json` may take. */
  readonly timeoutMs: number
}

/** A discovered machine: its name (for logs) and its IPv4 tailnet address. */
export interface TailnetPeer {
  readonly name: string
  readonly ip: string
}

/** A failure of one status read, and whether waiting can cure it (tailscaled starting, logging in). */
export interface StatusProblem {
  readonly error: DiscoveryFailed
  readonly transient: boolean
}

const ipv4 = /^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$/

/** A machine's first IPv4 tailnet address (Tailscale lists IPv4 first, then IPv6). */
export const firstIpv4 = (status: PeerStatus): string | undefined => status.TailscaleIPs?.find((ip) => ipv4.test(ip))

const nameOf = (status: PeerStatus, fallback: string): string =>
  status.HostName !== undefined && status.HostName !== "" ? status.HostName : status.DNSName?.replace(/\.$/, "") || fallback

const decodeStatusJson = Schema.decodeUnknownEither(TailscaleStatus)

/** The document `tailscale status --json` printed, decoded (unknown fields ignored). */
export const decodeStatus = (text: string, settings: Pick<TailscaleSettings, "node" | "binary">): Either.Either<TailscaleStatus, DiscoveryFailed> => {
  const command = `${settings.binary} status --json`
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (error) {
    return Either.left(
      new DiscoveryFailed({
        node: settings.node,
        subject: settings.binary,
        message: `\`${command}\` printed something that is not JSON (${error instanceof Error ? error.message : String(error)}); check that tailscaleBinary names Tailscale's own CLI`
      })
    )
  }
  return Either.mapLeft(decodeStatusJson(raw), (error) => {
    const [first] = ParseResult.ArrayFormatter.formatErrorSync(error)
    const where = first === undefined ? "" : `${first.path.join(".") || "(root)"}: ${first.message}`
    return new DiscoveryFailed({
      node: settings.node,
      subject: settings.binary,
      message: `\`${command}\` printed JSON that is not Tailscale's status document (${where}); check that tailscaleBinary names Tailscale's own CLI, of a release from 2021 or later`
    })
  })
}

/** This machine's IPv4 tailnet address, once tailscaled runs and is logged in. */
export const selfIp = (status: TailscaleStatus, settings: Pick<TailscaleSettings, "node">): Either.Either<string, StatusProblem> => {
  const state = status.BackendState ?? "Running"
  if (state !== "Running") {
    const advice = state === "NeedsLogin" || state === "NeedsMachineAuth"
      ? "log this machine in to the tailnet (`tailscale up`, or approve it in the admin console)"
      : state === "Stopped"
        ? "start it with `tailscale up`"
        : "wait for tailscaled to connect, or check `tailscale status`"
    return Either.left({
      transient: true,
      error: new DiscoveryFailed({ node: settings.node, subject: "tailscale", message: `Tailscale is not connected (BackendState ${JSON.stringify(state)}): ${advice}` })
    })
  }
  const ip = status.Self === undefined || status.Self === null ? undefined : firstIpv4(status.Self)
  if (ip === undefined) {
    return Either.left({
      transient: true,
      error: new DiscoveryFailed({ node: settings.node, subject: "tailscale", message: "Tailscale reports no IPv4 tailnet address for this machine (Self.TailscaleIPs); check `tailscale ip -4` and that the tailnet assigns IPv4 addresses" })
    })
  }
  return Either.right(ip)
}

/** Whether this machine itself carries the tag (others find it only then). */
export const selfTagged = (status: TailscaleStatus, tag: string): boolean => status.Self?.Tags?.includes(tag) === true

/**
 * The peers to ask: online, tagged with `tag`, with an IPv4 address other than `self`; sorted by
 * address, so every node asks them in the same order.
 */
export const selectPeers = (status: TailscaleStatus, tag: string, self: string | undefined): ReadonlyArray<TailnetPeer> => {
  const peers: Array<TailnetPeer> = []
  for (const [key, peer] of Object.entries(status.Peer ?? {})) {
    if (peer.Online !== true || peer.Tags?.includes(tag) !== true) continue
    const ip = firstIpv4(peer)
    if (ip === undefined || ip === self) continue
    peers.push({ name: nameOf(peer, key), ip })
  }
  const order = (ip: string) => ip.split(".").map((part) => part.padStart(3, "0")).join(".")
  return peers.sort((a, b) => (order(a.ip) < order(b.ip) ? -1 : order(a.ip) > order(b.ip) ? 1 : 0))
}

/** Runs `tailscale status --json` and decodes what it prints. */
export const readStatus = (settings: TailscaleSettings): Effect.Effect<TailscaleStatus, StatusProblem> =>
  Effect.async<string, StatusProblem>((resume) => {
    const child = execFile(
      settings.binary,
      ["status", "--json"],
      { timeout: settings.timeoutMs, maxBuffer: 64 * 1024 * 1024, encoding: "utf8" },
      (error, stdout, stderr) => {
        if (error === null) return resume(Effect.succeed(stdout))
        const code = (error as NodeJS.ErrnoException).code
        const failed = (transient: boolean, message: string) =>
          resume(Effect.fail({ transient, error: new DiscoveryFailed({ node: settings.node, subject: settings.binary, message }) }))
        if (code === "ENOENT") {
          return failed(false, `the tailscale binary ${JSON.stringify(settings.binary)} was not found; install Tailscale (NixOS: services.tailscale.enable = true) or set tailscaleBinary (--tailscale-binary) to its path`)
        }
        if (code === "EACCES") {
          return failed(false, `the tailscale binary ${JSON.stringify(settings.binary)} cannot be run by this user (permission denied); set tailscaleBinary (--tailscale-binary) to an executable`)
        }
        if (error.killed === true) {
          return failed(true, `\`${settings.binary} status --json\` did not answer within ${settings.timeoutMs} ms; check that tailscaled is healthy (\`systemctl status tailscaled\`)`)
        }
        const said = String(stderr).trim().split("\n")[0] ?? ""
        return failed(true, `\`${settings.binary} status --json\` failed (${said || error.message}); is tailscaled running? (\`systemctl status tailscaled\`)`)
      }
    )
    return Effect.sync(() => void child.kill("SIGKILL"))
  }).pipe(
    Effect.flatMap((text) => Either.mapLeft(decodeStatus(text, settings), (error): StatusProblem => ({ error, transient: false })))
  )
