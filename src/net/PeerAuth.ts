/**
 * `PeerAuth`: how a node proves to a peer that it holds the cluster secret before any Raft traffic
 * flows.
 *
 * Node↔node traffic runs over one websocket per (sender, receiver) pair. The sender opens it with
 * `GET /raft?from=F&to=T&ts=MS&nonce=N&mac=M`, where
 *
 *   key = HMAC-SHA256(clusterSecret, "blixard raft transport key")      (domain separation)
 *   M   = base64url(HMAC-SHA256(key, "blixard-raft/2\n" + clusterId + "\n" + F + "\n" + T + "\n" + MS + "\n" + N))
 *
 * The receiver refuses the upgrade with 401, before reading anything from the socket, unless: every
 * field is well formed, `T` is the receiver's own id and `F` is not, `MS` is within `maxClockSkewMs` of its clock, the
 * MAC matches (compared in constant time), and the nonce was not seen before within the skew window
 * (a replayed handshake is refused). The accepted connection is then bound to sender `F`: the
 * receiver drops any message on it whose `from` is not `F` or whose `to` is not the receiver. The
 * version string names the wire protocol (`PeerTransport`'s frames), so a node of an incompatible
 * release is refused at the handshake instead of sending frames its peer cannot read.
 *
 * Incarnations: both ends also name the incarnation of their data directory (`NodeMeta.claim`: a
 * random id drawn when the directory is first used), so each learns at every connection whether the
 * other is still the life its queue and Raft progress were built for (`PeerTransport`). The sender
 * adds `&inc=I&incmac=IM` to the request, and the receiver answers the upgrade with the headers
 * `x-blixard-incarnation` and `x-blixard-incarnation-mac`:
 *
 *   IM = base64url(HMAC-SHA256(key, "blixard-raft/2 incarnation\n" + clusterId + "\n" + F + "\n" + T + "\n" + N + "\n" + I))
 *   answer's MAC: the same with "blixard-raft/2 incarnation answer", T then F, and the receiver's I
 *
 * Both MACs cover the handshake's nonce, so neither can be carried over to another connection. They
 * are separate from `M` (not a new version string) so that either end may be of a release without
 * incarnations: such a node sends none and ignores the other's, and its peers treat it as before
 * (no incarnation known). A malformed or unauthenticated incarnation is refused like a bad MAC.
 *
 * By default the websocket runs over mutual TLS (`PeerTransport`'s `tls`, certificates from the
 * cluster CA): TLS encrypts and proves which node is at the other end, and this handshake still binds
 * the connection to the cluster secret and refuses replays. In plain mode (`--insecure-plaintext`)
 * it is the only protection, and nothing is encrypted. Every holder of the secret is a full member.
 *
 * Keyrings: a node may hold several secrets (`node/ClusterKeyring.ts`, how the secret is rotated).
 * It signs with the first; the receiver accepts a handshake whose MAC matches any of its secrets
 * (each compared, no early exit) and answers the incarnation with the key that matched, which is
 * the sender's. The keyring is asked for at each handshake, so a re-read file takes effect for the
 * next connection; open connections stay.
 */
import * as crypto from "node:crypto"

const keyLabel = "blixard raft transport key"
const version = "blixard-raft/2"

/** Derives the transport's HMAC key from the cluster secret. */
export const deriveKey = (clusterSecret: string): Buffer =>
  crypto.createHmac("sha256", clusterSecret).update(keyLabel).digest()

export interface Handshake {
  readonly from: number
  readonly to: number
  readonly ts: number
  readonly nonce: string
  readonly mac: string
  /** The sender's data directory's incarnation and its MAC (absent from nodes without incarnations). */
  readonly incarnation?: { readonly id: string; readonly mac: string } | undefined
}

const intPattern = /^[1-9][0-9]{0,14}$/
const noncePattern = /^[0-9a-f]{32}$/
const macPattern = /^[A-Za-z0-9_-]{43}$/
/** An incarnation as it may travel: `NodeMeta` draws UUIDs; anything of 1 to 64 of these characters passes. */
const incarnationPattern = /^[0-9A-Za-z_-]{1,64}$/

/** True if `id` can be carried as an incarnation. */
export const isIncarnation = (id: string): boolean => incarnationPattern.test(id)

const incarnationMacOf = (key: Buffer, label: string, clusterId: string, from: number, to: number, nonce: string, incarnation: string): string =>
  crypto.createHmac("sha256", key).update(`${version} ${label}\n${clusterId}\n${from}\n${to}\n${nonce}\n${incarnation}`).digest("base64url")

const macEquals = (a: string, b: string): boolean => a.length === b.length && crypto.timingSafeEqual(Buffer.from(a), Buffer.from(b))

/** The response headers naming the receiver's incarnation, for the handshake `h` it accepted. */
export const incarnationHeaders = (key: Buffer, clusterId: string, h: { readonly from: number; readonly to: number; readonly nonce: string }, incarnation: string): ReadonlyArray<string> => [
  `x-blixard-incarnation: ${incarnation}`,
  `x-blixard-incarnation-mac: ${incarnationMacOf(key, "incarnation answer", clusterId, h.to, h.from, h.nonce, incarnation)}`
]

export type AnswerVerdict =
  | { readonly ok: true; readonly incarnation: string | undefined }
  | { readonly ok: false; readonly reason: string }

/**
 * Reads the receiver's incarnation from its answer to `h` (the upgrade response's headers): undefined
 * if it named none (a release without incarnations), refused if malformed or not authenticated.
 */
export const answeredIncarnation = (
  key: Buffer,
  clusterId: string,
  h: Pick<Handshake, "from" | "to" | "nonce">,
  headers: Readonly<Record<string, string | ReadonlyArray<string> | undefined>>
): AnswerVerdict => {
  const id = headers["x-blixard-incarnation"]
  const mac = headers["x-blixard-incarnation-mac"]
  if (id === undefined && mac === undefined) return { ok: true, incarnation: undefined }
  if (typeof id !== "string" || typeof mac !== "string" || !incarnationPattern.test(id) || !macPattern.test(mac)) {
    return { ok: false, reason: `node ${h.to} answered with a malformed incarnation` }
  }
  if (!macEquals(mac, incarnationMacOf(key, "incarnation answer", clusterId, h.to, h.from, h.nonce, id))) {
    return { ok: false, reason: `node ${h.to}'s incarnation is not authenticated (bad MAC)` }
  }
  return { ok: true, incarnation: id }
}

const macOf = (key: Buffer, clusterId: string, from: number, to: number, ts: number, nonce: string): string =>
  crypto.createHmac("sha256", key).update(`${version}\n${clusterId}\n${from}\n${to}\n${ts}\n${nonce}`).digest("base64url")

/** A fresh handshake from `from` to `to`, stamped with `now` (ms since the epoch), naming the sender's `incarnation` if given. */
export const sign = (key: Buffer, clusterId: string, from: number, to: number, now: number, incarnation?: string): Handshake => {
  const nonce = crypto.randomBytes(16).toString("hex")
  const h = { from, to, ts: now, nonce, mac: macOf(key, clusterId, from, to, now, nonce) }
  if (incarnation === undefined) return h
  return { ...h, incarnation: { id: incarnation, mac: incarnationMacOf(key, "incarnation", clusterId, from, to, nonce, incarnation) } }
}

/** The query string carrying a handshake (without the leading `?`). */
export const toQuery = (h: Handshake): string =>
  `from=${h.from}&to=${h.to}&ts=${h.ts}&nonce=${h.nonce}&mac=${h.mac}` +
  (h.incarnation === undefined ? "" : `&inc=${h.incarnation.id}&incmac=${h.incarnation.mac}`)


/** A node's cluster secrets: one, or its keyring as it is now (the first is the one it proves with). */
export type Secrets = string | (() => ReadonlyArray<string>)

export const secretsOf = (secrets: Secrets): ReadonlyArray<string> => (typeof secrets === "string" ? [secrets] : secrets())

export type Verdict =
  /**
   * `incarnation`: the sender's, undefined if it named none; `nonce` and `key` (the sender's, among
   * the receiver's keys), to authenticate the answer's.
   */
  | { readonly ok: true; readonly from: number; readonly incarnation: string | undefined; readonly nonce: string; readonly key: Buffer }
  | { readonly ok: false; readonly reason: string; readonly from?: number }

/**
 * Checks the handshake in a request URL. Remembers accepted nonces (until they fall out of the skew
 * window) to refuse replays; unauthenticated requests never add to that memory.
 */
export class HandshakeVerifier {
  private readonly seen = new Map<string, number>()
  private derived = new Map<string, Buffer>()

  constructor(
    private readonly secrets: Secrets,
    private readonly clusterId: string,
    private readonly self: number,
    private readonly maxClockSkewMs: number
  ) {}

  /** The keys of the keyring as it is now (derived once per secret). */
  private keys(): ReadonlyArray<Buffer> {
    const secrets = secretsOf(this.secrets)
    if (secrets.some((s) => !this.derived.has(s)) || this.derived.size !== secrets.length) {
      this.derived = new Map(secrets.map((s) => [s, this.derived.get(s) ?? deriveKey(s)]))
    }
    return secrets.map((s) => this.derived.get(s)!)
  }

  verify(url: string, now: number): Verdict {
    const q = url.indexOf("?")
    const params = new URLSearchParams(q < 0 ? "" : url.slice(q + 1))
    const fromText = params.get("from") ?? ""
    const toText = params.get("to") ?? ""
    const tsText = params.get("ts") ?? ""
    const nonce = params.get("nonce") ?? ""
    const mac = params.get("mac") ?? ""
    if (!intPattern.test(fromText) || !intPattern.test(toText) || !intPattern.test(tsText)) {
      return { ok: false, reason: "missing or malformed handshake" }
    }
    if (!noncePattern.test(nonce) || !macPattern.test(mac)) return { ok: false, reason: "missing or malformed handshake" }
    const from = Number(fromText)
    const to = Number(toText)
    const ts = Number(tsText)
    let key: Buffer | undefined
    for (const candidate of this.keys()) {
      if (crypto.timingSafeEqual(Buffer.from(mac), Buffer.from(macOf(candidate, this.clusterId, from, to, ts, nonce)))) key ??= candidate
    }
    if (key === undefined) {
      return { ok: false, reason: "bad MAC (made from a secret this node's cluster secret file does not hold, another cluster id, or a peer of an incompatible blixard release)", from }
    }
    const incarnation = params.get("inc") ?? undefined
    const incarnationMac = params.get("incmac") ?? undefined
    if (incarnation !== undefined || incarnationMac !== undefined) {
      if (incarnation === undefined || incarnationMac === undefined || !incarnationPattern.test(incarnation) || !macPattern.test(incarnationMac)) {
        return { ok: false, reason: "malformed incarnation in the handshake", from }
      }
      if (!macEquals(incarnationMac, incarnationMacOf(key, "incarnation", this.clusterId, from, to, nonce, incarnation))) {
        return { ok: false, reason: "bad incarnation MAC (the incarnation was altered)", from }
      }
    }
    if (to !== this.self) return { ok: false, reason: `handshake addressed to node ${to}, not ${this.self}`, from }
    // A node never dials itself; messages "from itself" would reach its Raft core as its own
    // acknowledgements (a forged appResp can move the leader's own match index past its log).
    if (from === this.self) return { ok: false, reason: `handshake claims to come from node ${from}, this node itself`, from }
    if (Math.abs(now - ts) > this.maxClockSkewMs) {
      return { ok: false, reason: `timestamp ${ts} is ${now - ts} ms from this node's clock (stale or replayed)`, from }
    }
    this.prune(now)
    if (this.seen.has(nonce)) return { ok: false, reason: "replayed handshake (nonce already used)", from }
    this.seen.set(nonce, ts + this.maxClockSkewMs)
    return { ok: true, from, incarnation, nonce, key }
  }

  private prune(now: number): void {
    for (const [nonce, expires] of this.seen) {
      if (expires >= now) continue
      this.seen.delete(nonce)
    }
  }
}
