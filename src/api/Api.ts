/**
 * Blixard's REST API: the one definition from which the server's routing and validation, the
 * OpenAPI document (`/openapi.json`) and the CLI's client are all derived.
 *
 * Writes may carry an `Idempotency-Key` header: a retried request with the same key is applied
 * once and answers with the first result. Updates may carry `ifRevision`: if the object has moved
 * on, the answer is 409 `BLX_CONFLICT`. Reads are linearizable unless `stale=true` is asked for.
 */
import { HttpApi, HttpApiEndpoint, HttpApiGroup, HttpApiMiddleware, HttpApiSchema, HttpApiSecurity, OpenApi } from "@effect/platform"
import { Schema } from "effect"
import { ApiTokenInfo, CreatedApiToken, Role, TokenId, TokenName } from "../domain/ApiToken.js"
import { CaStatus } from "../domain/CaRotation.js"
import { SecretFingerprints, SecretStatus } from "../domain/ClusterSecret.js"
import { ClusterStatus } from "../domain/ClusterStatus.js"
import { CertificateFingerprint, CertificateIssue, CertificateList, CertificateRecord, CertificateSerial, RevocationReason, RevokedCertificate } from "../domain/Certificate.js"
import { ReportVmStatuses } from "../domain/Command.js"
import * as E from "../domain/Errors.js"
import { CreatedJoinToken, JoinTokenHash, JoinTokenId, JoinTokenInfo, JoinTokenTtlMs } from "../domain/JoinToken.js"
import { Labels } from "../domain/Labels.js"
import { NodeListParams, VmListParams } from "../domain/ListQuery.js"
import { NodeId } from "../domain/NodeId.js"
import { HostBeat, HostHeartbeat, HostPort, NodeInfo } from "../domain/NodeInfo.js"
import { VmName } from "../domain/VmName.js"
import { CreateStart, VmChanges, VmSpecBody } from "../domain/VmSpec.js"
import { VmRecord, VmStatus } from "../domain/VmStatus.js"
import { EndpointAccess } from "./Auth.js"

/** The largest request body accepted (an inline VM config is at most 64 KiB of it). */
export const MaxBodyBytes = 256 * 1024

const name = HttpApiSchema.param("name", VmName)
const nodeId = HttpApiSchema.param("id", Schema.NumberFromString.pipe(Schema.compose(NodeId)))

const ReadParams = Schema.Struct({
  /** Serve from this node's state without a ReadIndex round (may be stale). */
  stale: Schema.optionalWith(Schema.BooleanFromString, { exact: true })
})
const WriteHeaders = Schema.Struct({
  "idempotency-key": Schema.optionalWith(
    Schema.String.pipe(Schema.minLength(1), Schema.maxLength(128), Schema.pattern(/^[A-Za-z0-9._:-]+$/)),
    { exact: true }
  )
})
const Revision = Schema.optionalWith(Schema.Int.pipe(Schema.positive()), { exact: true })

/**
 * Request bodies are strict: an unknown field is an error (a typo such as `vcpu` must not be dropped
 * silently), and every problem is reported, not only the first.
 */
const strict = (example: string) =>
  ({
    parseOptions: { onExcessProperty: "error", errors: "all" },
    // Only for a body that is not an object at all (absent, `null`, a string); problems inside it
    // keep their own messages.
    message: () => `the body must be a JSON object: ${example}`
  }) as const

/**
 * Every endpoint except `/v1/health` needs `Authorization: Bearer TOKEN`; otherwise 401
 * `BLX_UNAUTHORIZED`. Each declares the access it needs (`EndpointAccess`: read, operate, admin,
 * node); a token whose role does not grant it gets 403 `BLX_FORBIDDEN`. The server provides the
 * checks (`src/api/Auth.ts`, `src/api/Server.ts`).
 */
export class Authorization extends HttpApiMiddleware.Tag<Authorization>()("blixard/api/Authorization", {
  // The status must be on the middleware's own failure schema too: un-annotated, it would answer 500.
  failure: E.Unauthorized.annotations(HttpApiSchema.annotations({ status: 401 })),
  security: { bearer: HttpApiSecurity.bearer }
}) {}

export class Health extends Schema.Class<Health>("Health")({
  status: Schema.Literal("ok"),
  node: NodeId,
  role: Schema.String,
  leader: Schema.optionalWith(NodeId, { exact: true })
}) {}

export const CreateVmBody = Schema.Struct({
  spec: VmSpecBody,
  /** Start the VM once placed; absent: `StartOnCreate` (started, as `vm create`); false: created stopped. */
  start: CreateStart
}).annotations(strict('{ "spec": { "name": …, "source": … }, "start": false }'))
export const UpdateBody = Schema.Struct({ ifRevision: Revision }).annotations(strict('{} or { "ifRevision": 3 }'))
export const LabelsBody = Schema.Struct({ labels: Labels, ifRevision: Revision }).annotations(
  strict('{ "labels": { "zone": "a" }, "ifRevision": 3 }')
)
export const UpdateVmBody = Schema.Struct({ ...VmChanges.fields, ifRevision: Revision }).pipe(
  Schema.filter((body) =>
    body.source !== undefined || body.vcpus !== undefined || body.memoryMiB !== undefined || body.restartPolicy !== undefined ||
    "an update changes at least one of source, vcpus, memoryMiB, restartPolicy"
  )
).annotations(strict('{ "source": { "_tag": "Runner", "path": "/nix/store/…" }, "vcpus": 2, "ifRevision": 3 }'))
/** What a node's agent observed of a VM it hosts. */
export const StatusReportBody = Schema.Struct({ node: NodeId, status: VmStatus })
export const JoinBody = Schema.Struct({ id: NodeId, address: HostPort }).annotations(
  strict('{ "id": 4, "address": "10.0.0.4:7001" }')
)
export const TransferBody = Schema.Struct({ id: NodeId }).annotations(strict('{ "id": 2 }'))

export class VmsApi extends HttpApiGroup.make("vms")
  .add(HttpApiEndpoint.get("list", "/v1/vms").setUrlParams(VmListParams).addSuccess(Schema.Array(VmRecord)).annotate(EndpointAccess, "read"))
  .add(HttpApiEndpoint.get("get")`/v1/vms/${name}`.setUrlParams(ReadParams).addSuccess(VmRecord).annotate(EndpointAccess, "read"))
  .add(HttpApiEndpoint.post("create", "/v1/vms").setPayload(CreateVmBody).setHeaders(WriteHeaders).addSuccess(VmRecord, { status: 201 }).annotate(EndpointAccess, "operate"))
  .add(HttpApiEndpoint.post("start")`/v1/vms/${name}/start`.setPayload(UpdateBody).setHeaders(WriteHeaders).addSuccess(VmRecord).annotate(EndpointAccess, "operate"))
  .add(HttpApiEndpoint.post("stop")`/v1/vms/${name}/stop`.setPayload(UpdateBody).setHeaders(WriteHeaders).addSuccess(VmRecord).annotate(EndpointAccess, "operate"))
  .add(HttpApiEndpoint.del("delete")`/v1/vms/${name}`.setUrlParams(Schema.Struct({ ifRevision: Schema.optionalWith(Schema.NumberFromString.pipe(Schema.int(), Schema.positive()), { exact: true }) })).setHeaders(WriteHeaders).addSuccess(VmRecord).annotate(EndpointAccess, "operate"))
  .add(HttpApiEndpoint.put("reportStatus")`/v1/vms/${name}/status`.setPayload(StatusReportBody).addSuccess(Schema.Void).annotate(EndpointAccess, "node"))
  .add(HttpApiEndpoint.patch("update")`/v1/vms/${name}`.setPayload(UpdateVmBody).setHeaders(WriteHeaders).addSuccess(VmRecord).annotate(EndpointAccess, "operate"))
  .add(HttpApiEndpoint.put("setLabels")`/v1/vms/${name}/labels`.setPayload(LabelsBody).setHeaders(WriteHeaders).addSuccess(VmRecord).annotate(EndpointAccess, "operate"))
  .middleware(Authorization) {}

/** A host's heartbeat body; hosts of older versions send none (the server reads it as `null`). */
const HeartbeatBody = Schema.transform(Schema.NullOr(HostBeat), Schema.typeSchema(HostBeat), {
  strict: true,
  decode: (beat) => beat ?? {},
  encode: (beat) => beat
}).annotations(strict('{ "incarnation": "6f1c2a9e-1b7d-4c55-9a0e-2d4f8b3c1e70", "fencingMs": 3000 }'))

/** A node's agent reports several VMs' statuses at once (`ReportVmStatuses`). */
export const StatusReportsBody = Schema.Struct({ reports: ReportVmStatuses.fields.reports }).annotations(
  strict('{ "reports": [{ "name": "web-1", "status": { "phase": "running", "since": 1767225600000, "pid": 4242, "restarts": 0 } }] }')
)

export class NodesApi extends HttpApiGroup.make("nodes")
  .add(HttpApiEndpoint.get("list", "/v1/nodes").setUrlParams(NodeListParams).addSuccess(Schema.Array(NodeInfo)).annotate(EndpointAccess, "read"))
  .add(HttpApiEndpoint.post("cordon")`/v1/nodes/${nodeId}/cordon`.setHeaders(WriteHeaders).addSuccess(NodeInfo).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.post("uncordon")`/v1/nodes/${nodeId}/uncordon`.setHeaders(WriteHeaders).addSuccess(NodeInfo).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.post("drain")`/v1/nodes/${nodeId}/drain`.setHeaders(WriteHeaders).addSuccess(NodeInfo).annotate(EndpointAccess, "admin"))
  /** A node announces (or refreshes) its address, capacity and labels; the body's id must match the path. */
  .add(HttpApiEndpoint.put("register")`/v1/nodes/${nodeId}`.setPayload(NodeInfo).addSuccess(NodeInfo).annotate(EndpointAccess, "node"))
  /** A registered host that is not a Raft member is alive; the leader answers after confirming its leadership. */
  .add(HttpApiEndpoint.post("heartbeat")`/v1/nodes/${nodeId}/heartbeat`.setPayload(HeartbeatBody).addSuccess(HostHeartbeat).annotate(EndpointAccess, "node"))
  /** The statuses of VMs the node hosts, in order (a cluster at log version 3 or later; before it, `PUT /v1/vms/NAME/status` each). */
  .add(HttpApiEndpoint.put("reportStatuses")`/v1/nodes/${nodeId}/statuses`.setPayload(StatusReportsBody).addSuccess(Schema.Void).annotate(EndpointAccess, "node"))
  .middleware(Authorization) {}

export class ClusterApi extends HttpApiGroup.make("cluster")
  .add(HttpApiEndpoint.get("status", "/v1/cluster").addSuccess(ClusterStatus).annotate(EndpointAccess, "read"))
  .add(HttpApiEndpoint.post("join", "/v1/cluster/members").setPayload(JoinBody).addSuccess(ClusterStatus).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.del("leave")`/v1/cluster/members/${nodeId}`.addSuccess(ClusterStatus).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.post("transferLeader", "/v1/cluster/leader").setPayload(TransferBody).addSuccess(ClusterStatus).annotate(EndpointAccess, "admin"))
  .middleware(Authorization) {}

export const CreateTokenBody = Schema.Struct({ role: Role, name: Schema.optionalWith(TokenName, { exact: true }) }).annotations(
  strict('{ "role": "operator", "name": "ci" }')
)
const tokenId = HttpApiSchema.param("id", TokenId)

/** Replicated API tokens (`blixard token …`): admin only. The secret is in the creation's answer, once. */
export class TokensApi extends HttpApiGroup.make("tokens")
  .add(HttpApiEndpoint.post("create", "/v1/tokens").setPayload(CreateTokenBody).addSuccess(CreatedApiToken, { status: 201 }).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.get("list", "/v1/tokens").setUrlParams(ReadParams).addSuccess(Schema.Array(ApiTokenInfo)).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.del("revoke")`/v1/tokens/${tokenId}`.addSuccess(ApiTokenInfo).annotate(EndpointAccess, "admin"))
  .middleware(Authorization) {}

export const CreateJoinTokenBody = Schema.Struct({ ttlMs: Schema.optionalWith(JoinTokenTtlMs, { exact: true }) }).annotations(
  strict('{ "ttlMs": 3600000 }')
)
export const ConsumeJoinTokenBody = Schema.Struct({
  hash: JoinTokenHash,
  node: NodeId,
  /** The SHA-256 of the joining node's public key (SubjectPublicKeyInfo DER): it may retry with it. */
  key: Schema.optionalWith(JoinTokenHash, { exact: true })
}).annotations(strict('{ "hash": "<sha256 hex of ID.SECRET>", "node": 4, "key": "<sha256 hex of the joining node public key, DER>" }'))
const joinTokenId = HttpApiSchema.param("id", JoinTokenId)

/**
 * Join tokens (`blixard cluster token …`): admin only, but for `consume`, which a member receiving a
 * joining node's token sends to the leader with its node credential (`TlsBootstrap.ts`).
 */
export class JoinTokensApi extends HttpApiGroup.make("joinTokens")
  .add(HttpApiEndpoint.post("create", "/v1/cluster/tokens").setPayload(CreateJoinTokenBody).addSuccess(CreatedJoinToken, { status: 201 }).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.get("list", "/v1/cluster/tokens").setUrlParams(ReadParams).addSuccess(Schema.Array(JoinTokenInfo)).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.del("revoke")`/v1/cluster/tokens/${joinTokenId}`.addSuccess(JoinTokenInfo).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.post("consume")`/v1/cluster/tokens/${joinTokenId}/consume`.setPayload(ConsumeJoinTokenBody).addSuccess(JoinTokenInfo).annotate(EndpointAccess, "node"))
  .middleware(Authorization) {}

export const RevokeCertificateBody = Schema.Struct({
  node: Schema.optionalWith(NodeId, { exact: true }),
  serial: Schema.optionalWith(CertificateSerial, { exact: true }),
  reason: Schema.optionalWith(RevocationReason, { exact: true })
}).annotations(strict('{ "node": 3, "reason": "key leaked" }  or  { "serial": "5f0c…" }'))
/**
 * A node's report of its own certificate (its credential or client certificate is `node`'s), or a
 * signer's record of one it issued, proven by the certificate itself (PEM, `certificate`).
 */
export const RecordCertificateBody = Schema.Struct({
  node: NodeId,
  serial: CertificateSerial,
  fingerprint: CertificateFingerprint,
  notAfter: Schema.Int.pipe(Schema.nonNegative()),
  issued: Schema.optionalWith(CertificateIssue, { exact: true }),
  certificate: Schema.optionalWith(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(16 * 1024)), { exact: true })
}).annotations(strict('{ "node": 2, "serial": "5f0c…", "fingerprint": "<sha256 hex>", "notAfter": 1767225600000 }'))

/**
 * Node certificates (`blixard cluster cert …`): what each node holds and the revocation list. Any
 * role reads; revoking is an admin's; `record` is a node's report of its own certificate, or a
 * signing member's of one it issued (with the certificate as proof; `Server.reportRefusal`).
 */
export class CertificatesApi extends HttpApiGroup.make("certificates")
  .add(HttpApiEndpoint.get("list", "/v1/cluster/certificates").setUrlParams(ReadParams).addSuccess(CertificateList).annotate(EndpointAccess, "read"))
  .add(HttpApiEndpoint.post("revoke", "/v1/cluster/certificates/revoke").setPayload(RevokeCertificateBody).addSuccess(Schema.Array(RevokedCertificate)).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.post("record", "/v1/cluster/certificates/record").setPayload(RecordCertificateBody).addSuccess(CertificateRecord).annotate(EndpointAccess, "node"))
  .middleware(Authorization) {}

export const CaRotationMovedBody = Schema.Struct({ node: NodeId, fingerprint: CertificateFingerprint }).annotations(
  strict('{ "node": 2, "fingerprint": "<sha256 hex of the new CA>" }')
)

/**
 * The cluster CA and its rotation (`blixard cluster ca …`, `domain/CaRotation.ts`): any role reads;
 * starting and finishing are an admin's; `moved` is a member's report that it holds a certificate
 * of the new CA.
 */
export class CaApi extends HttpApiGroup.make("ca")
  .add(HttpApiEndpoint.get("status", "/v1/cluster/ca").setUrlParams(ReadParams).addSuccess(CaStatus).annotate(EndpointAccess, "read"))
  .add(HttpApiEndpoint.post("rotate", "/v1/cluster/ca/rotate").addSuccess(CaStatus).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.post("finish", "/v1/cluster/ca/finish").addSuccess(CaStatus).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.post("moved", "/v1/cluster/ca/moved").setPayload(CaRotationMovedBody).addSuccess(CaStatus).annotate(EndpointAccess, "node"))
  .middleware(Authorization) {}

/**
 * The cluster secret's keyring (`blixard cluster secret status`, `node/ClusterKeyring.ts`): fingerprints
 * only. `status` is an admin's (the answering node asks every member); `self` is what a member
 * answers it, with its node credential.
 */
export class SecretApi extends HttpApiGroup.make("secret")
  .add(HttpApiEndpoint.get("status", "/v1/cluster/secret").addSuccess(SecretStatus).annotate(EndpointAccess, "admin"))
  .add(HttpApiEndpoint.get("self", "/v1/cluster/secret/self").addSuccess(SecretFingerprints).annotate(EndpointAccess, "node"))
  .middleware(Authorization) {}

export class HealthApi extends HttpApiGroup.make("health").add(HttpApiEndpoint.get("health", "/v1/health").addSuccess(Health)) {}

/**
 * Makes the OpenAPI document say what the server does (see `src/api/Server.ts`): malformed input is
 * answered with `InvalidArgument` (400, or 413 for a body over `MaxBodyBytes`), never with HttpApi's
 * built-in `HttpApiDecodeError`, which Effect 3 always lists.
 */
// The document is plain JSON here (`OpenApi.Transform` hands it over as `Record<string, any>`).
const documentInputErrors = (document: Record<string, any>): Record<string, any> => {
  const decodeError = "#/components/schemas/HttpApiDecodeError"
  const invalid = { content: { "application/json": { schema: { $ref: "#/components/schemas/InvalidArgument" } } } }
  for (const item of Object.values<Record<string, any>>(document.paths ?? {})) {
    for (const operation of Object.values<Record<string, any>>(item)) {
      const responses: Record<string, any> = operation.responses ?? {}
      for (const response of Object.values<Record<string, any>>(responses)) {
        const content = response.content?.["application/json"]
        if (!Array.isArray(content?.schema?.anyOf)) continue
        const seen = new Set<string>()
        const kept = (content.schema.anyOf as Array<Record<string, any>>).filter((member) => {
          const key = typeof member.$ref === "string" ? member.$ref : JSON.stringify(member)
          if (key === decodeError || seen.has(key)) return false
          seen.add(key)
          return true
        })
        content.schema = kept.length === 1 ? kept[0] : { anyOf: kept }
      }
      responses["400"] = { description: "InvalidArgument: a path parameter, query parameter, header or the body is malformed", ...invalid }
      if (operation.requestBody !== undefined) {
        responses["413"] = { description: `InvalidArgument: the body is larger than ${MaxBodyBytes} bytes`, ...invalid }
      }
    }
  }
  for (const name of ["HttpApiDecodeError", "Issue", "PropertyKey"]) delete document.components?.schemas?.[name]
  return document
}

export class BlixardApi extends HttpApi.make("blixard")
  .annotate(OpenApi.Title, "Blixard")
  .annotate(OpenApi.Transform, documentInputErrors)
  .add(VmsApi)
  .add(NodesApi)
  .add(ClusterApi)
  .add(TokensApi)
  .add(JoinTokensApi)
  .add(CertificatesApi)
  .add(CaApi)
  .add(SecretApi)
  .add(HealthApi)
  // Every error crosses the API as itself (the tagged error, with its code) with a fitting status.
  // Every member of `BlixardError` must be listed: a missing one makes the handlers in Server.ts
  // fail to compile (the ControlPlane may fail with it, the API could not send it).
  .addError(E.InvalidArgument, { status: 400 })
  .addError(E.Unauthorized, { status: 401 })
  .addError(E.Forbidden, { status: 403 })
  .addError(E.RunnerNotAllowed, { status: 400 })
  .addError(E.FlakeNotAllowed, { status: 400 })
  .addError(E.TokenNotFound, { status: 404 })
  .addError(E.JoinTokenInvalid, { status: 401 })
  .addError(E.JoinTokenUsed, { status: 409 })
  .addError(E.JoinTokenExpired, { status: 410 })
  .addError(E.ClusterSecretRequired, { status: 409 })
  .addError(E.CertificateRevoked, { status: 403 })
  .addError(E.CaRotationIncomplete, { status: 409 })
  .addError(E.ClusterVersionTooLow, { status: 409 })
  .addError(E.VmNotFound, { status: 404 })
  .addError(E.NodeNotFound, { status: 404 })
  .addError(E.VmExists, { status: 409 })
  .addError(E.Conflict, { status: 409 })
  .addError(E.MemberAmnesia, { status: 409 })
  .addError(E.NodeIdInUse, { status: 409 })
  .addError(E.Unschedulable, { status: 409 })
  .addError(E.NotLeader, { status: 503 })
  .addError(E.Unavailable, { status: 503 })
  .addError(E.ProposalDropped, { status: 503 })
  .addError(E.Timeout, { status: 504 })
  .addError(E.NotImplemented, { status: 501 })
  .addError(E.StorageCorrupt, { status: 500 })
  .addError(E.StorageIo, { status: 500 })
  .addError(E.StorageLocked, { status: 500 })
  .addError(E.BackendFailed, { status: 502 })
  .addError(E.TlsUntrusted, { status: 502 })
  .addError(E.InvariantViolated, { status: 500 })
  .addError(E.WrongDataDir, { status: 500 })
  .addError(E.ConfigInvalid, { status: 500 }) {}
