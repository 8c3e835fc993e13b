/**
 * Who may call the API, and what each caller may do.
 *
 * A request carries `Authorization: Bearer <token>`. Three kinds of token are accepted:
 *
 * - The node's own admin tokens: the file `apiTokenFile` names, or else the `api-token` file the node
 *   generates in its data directory on first start (mode 0600). Only that node accepts them.
 * - Replicated tokens, `blxt_<id>_<secret>`, made by `blixard token create --role R`: every node
 *   accepts them; the state machine keeps only the SHA-256 of each (`ApiToken.ts`).
 * - Node credentials, `blxn_<node>_<HMAC-SHA256(cluster secret, node)>`: what a node presents to
 *   another (a follower forwarding a write to the leader, an agent reporting a VM's status through
 *   it, a node joining). A node holding the cluster secret can already append to the Raft log, so its
 *   credential may do everything. Without a configured cluster secret the secret is public, so node
 *   credentials are then accepted only from loopback.
 *
 * Every comparison is of SHA-256 digests (or HMACs) with `timingSafeEqual`, so its time says nothing
 * about how much of a guess was right. An endpoint declares the access it needs (`EndpointAccess`);
 * a caller whose role does not grant it gets 403 `BLX_FORBIDDEN`.
 */
import { Context, Either, Redacted } from "effect"
import { createHash, createHmac, randomBytes, timingSafeEqual } from "node:crypto"
import type { ApiTokenRecord, Role } from "../domain/ApiToken.js"
import { Forbidden, Unauthorized } from "../domain/Errors.js"

/**
 * What an endpoint needs: reading, reading VMs' logs, the VMs' lifecycle, administration, or being a
 * node of the cluster. Logs are not a read like the others: a guest may print secrets on its console.
 */
export type Access = "read" | "logs" | "operate" | "admin" | "node"

/** The access an endpoint of `BlixardApi` needs (an annotation the server reads at start-up). */
export class EndpointAccess extends Context.Tag("blixard/api/EndpointAccess")<EndpointAccess, Access>() {}

export type Principal =
  | { readonly kind: "token"; readonly role: Role; readonly who: string }
  | { readonly kind: "node"; readonly node: number }

/** The roles that grant each access; a node credential grants every access. */
const granted: Record<Access, ReadonlyArray<Role>> = {
  read: ["read-only", "operator", "admin"],
  logs: ["operator", "admin"],
  operate: ["operator", "admin"],
  admin: ["admin"],
  node: []
}

const roleFor: Record<Access, string> = {
  read: "any role",
  logs: "the operator or admin role (a VM's log may hold secrets its guest printed)",
  operate: "the operator or admin role",
  admin: "the admin role",
  node: "a node's credential (only nodes of the cluster make this request)"
}

export const permits = (principal: Principal, access: Access): boolean =>
  principal.kind === "node" || granted[access].includes(principal.role)

/** 403 for `principal` asking `what` (e.g. `POST /v1/vms`). */
export const forbidden = (principal: Principal, access: Access, what: string): Forbidden =>
  new Forbidden({
    subject: what,
    message: `${what} needs ${roleFor[access]}, but ${principal.kind === "node" ? `node ${principal.node}` : principal.who} has the ${principal.kind === "node" ? "node" : principal.role} role; ask an admin for a token with the right role (blixard token create --role …)`
  })

export const sha256Hex = (text: string): string => createHash("sha256").update(text, "utf8").digest("hex")

const sha256 = (text: string): Buffer => createHash("sha256").update(text, "utf8").digest()

/** 256 random bits, base64url (43 characters). */
export const randomSecret = (): string => randomBytes(32).toString("base64url")

/** A new replicated token's id: 64 random bits as 16 hex digits. */
export const randomTokenId = (): string => randomBytes(8).toString("hex")

export const replicatedToken = (id: string, secret: string): string => `blxt_${id}_${secret}`

const replicatedPattern = /^blxt_([0-9a-f]{16})_[A-Za-z0-9_-]{43}$/
const nodePattern = /^blxn_([1-9][0-9]{0,9})_[0-9a-f]{64}$/

const nodeMac = (clusterSecret: string, node: number): string =>
  createHmac("sha256", clusterSecret).update(`blixard node API credential ${node}`, "utf8").digest("hex")

/** The credential node `node` presents to the other nodes' APIs. */
export const nodeCredential = (clusterSecret: string, node: number): string => `blxn_${node}_${nodeMac(clusterSecret, node)}`

export interface AuthOptions {
  /** Admin tokens only this node accepts (the configured token file, or the generated `api-token`). */
  readonly adminTokens?: ReadonlyArray<Redacted.Redacted<string> | string> | undefined
  /** Where a person finds an admin token, said in every 401 (e.g. the `api-token` file's path). */
  readonly hint?: string | undefined
  /**
   * The cluster secret, when node credentials are accepted; a function is asked at each request for
   * the keyring, every secret of which is accepted (a rotation, `node/ClusterKeyring.ts`).
   */
  readonly clusterSecret?: string | (() => ReadonlyArray<string>) | undefined
  /** Told of each accepted node credential, with the secret it was made from (who uses which secret during a rotation). */
  readonly nodeCredentialSeen?: ((node: number, secret: string) => void) | undefined
  /** Accept node credentials only from loopback addresses (the cluster secret is the public default). */
  readonly nodeCredentialsFromLoopbackOnly?: boolean | undefined
  /** The replicated token with this id, if any. */
  readonly tokens?: ((id: string) => ApiTokenRecord | undefined) | undefined
}

export type Authenticate = (authorization: string | undefined, remoteAddress: string | undefined) => Either.Either<Principal, Unauthorized>

export const isLoopback = (address: string | undefined): boolean =>
  address !== undefined && (address === "::1" || address.startsWith("127.") || address.startsWith("::ffff:127."))

/**
 * The authenticator of `options`. Every admin token is compared (no early exit), each through its
 * SHA-256, so neither a token's length nor its content shows in the time taken.
 */
export const makeAuthenticate = (options: AuthOptions): Authenticate => {
  const hint = options.hint === undefined ? "" : `; ${options.hint}`
  const deny = (message: string) => Either.left(new Unauthorized({ message: `${message}${hint}`, subject: "Authorization" }))
  const admins = (options.adminTokens ?? [])
    .map((token) => (typeof token === "string" ? token : Redacted.value(token)).trim())
    // Fail closed: an empty token (an empty token file) must not let `Bearer ` through.
    .filter((token) => token !== "")
    .map(sha256)
  const configured = options.clusterSecret
  const secrets = (): ReadonlyArray<string> => (typeof configured === "string" ? [configured] : configured?.() ?? [])
  return (authorization, remoteAddress) => {
    if (authorization === undefined || authorization === "") {
      return deny("this node requires an API token: send the header \"Authorization: Bearer <token>\"")
    }
    if (!/^bearer /i.test(authorization)) return deny("the Authorization header must be \"Bearer <token>\"")
    const token = authorization.slice(7).trim()
    const digest = sha256(token)
    const replicated = replicatedPattern.exec(token)
    if (replicated !== null) {
      const record = options.tokens?.(replicated[1]!)
      return record !== undefined && timingSafeEqual(digest, Buffer.from(record.hash, "hex"))
        ? Either.right({ kind: "token", role: record.role, who: `token ${record.id}${record.name !== undefined ? ` (${record.name})` : ""}` })
        : deny("the API token is not valid (revoked, mistyped, or of another cluster)")
    }
    const node = nodePattern.exec(token)
    if (node !== null && configured !== undefined) {
      const id = Number(node[1])
      // Every secret is compared (no early exit): which one matched does not show in the time taken.
      let matched: string | undefined
      for (const secret of secrets()) {
        if (timingSafeEqual(digest, sha256(`blxn_${id}_${nodeMac(secret, id)}`))) matched ??= secret
      }
      if (matched === undefined) return deny("the node credential is not valid for this cluster (made from a secret this node's cluster secret file does not hold)")
      if (options.nodeCredentialsFromLoopbackOnly === true && !isLoopback(remoteAddress)) {
        return deny(
          "node credentials are accepted only from loopback while no cluster secret is configured; set clusterSecretFile (--cluster-secret-file) on every node"
        )
      }
      options.nodeCredentialSeen?.(id, matched)
      return Either.right({ kind: "node", node: id })
    }
    let match = false
    for (const admin of admins) match = timingSafeEqual(digest, admin) || match
    return match ? Either.right({ kind: "token", role: "admin", who: "this node's admin token" }) : deny("the API token is not valid for this node")
  }
}
