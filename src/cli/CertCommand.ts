/**
 * `blixard cluster cert status|revoke`: the nodes' certificates (serial, expiry) as each node reported
 * them, and the revocation list. Revoking (admin) takes a node id — every certificate it reported —
 * or a serial number; peers and the API refuse a revoked certificate from then on.
 *
 * `blixard cluster ca status|rotate|finish`: the cluster CA in force and its rotation
 * (`node/CaRotation.ts`): `rotate` (admin) starts one, after which every node trusts both CAs and
 * every member moves to a certificate of the new one; `finish` (admin) drops the old CA, refused
 * (`BLX_CA_ROTATION_INCOMPLETE`, naming them) while members still hold only an old-CA certificate.
 */
import * as Args from "@effect/cli/Args"
import * as Command from "@effect/cli/Command"
import * as Options from "@effect/cli/Options"
import { Console, Effect, Option, Schema } from "effect"
import { CaStatus } from "../domain/CaRotation.js"
import { CertificateList, CertificateSerial, normalizeSerial, RevocationReason, RevokedCertificate } from "../domain/Certificate.js"
import { NodeId } from "../domain/NodeId.js"
import { BlixardClient } from "./BlixardClient.js"
import { renderTable } from "./Format.js"
import { clientContext, clientOptions } from "./GlobalOptions.js"
import { check, describe, invalidArgument } from "./Validate.js"

const day = 24 * 60 * 60 * 1000

const left = (notAfter: number, now: number): string =>
  notAfter <= now ? "EXPIRED" : notAfter - now < 2 * day ? `${Math.floor((notAfter - now) / 3_600_000)}h` : `${Math.floor((notAfter - now) / day)}d`

/** `cluster cert status`: one row per certificate, then the revocation list; `--json`: the list as the API answers it. */
export const formatCertificates = (list: CertificateList, asJson: boolean, now: number): string => {
  if (asJson) return JSON.stringify(Schema.encodeSync(CertificateList)(list), null, 2)
  const held =
    list.certificates.length === 0
      ? "No certificates reported (each node reports its own at start; nodes with --insecure-plaintext have none)."
      : renderTable(
          ["NODE", "SERIAL", "EXPIRES", "LEFT"],
          [...list.certificates].sort((a, b) => a.node - b.node || a.notAfter - b.notAfter).map((c) => [String(c.node), c.serial, new Date(c.notAfter).toISOString(), left(c.notAfter, now)])
        )
  const revoked =
    list.revoked.length === 0
      ? "No revoked certificates."
      : "Revoked:\n" +
        renderTable(
          ["NODE", "SERIAL", "REVOKED", "REASON"],
          list.revoked.map((r) => [r.node === undefined ? "-" : String(r.node), r.serial, r.revokedAt === undefined ? "-" : new Date(r.revokedAt).toISOString(), r.reason])
        )
  return `${held}\n\n${revoked}`
}

const status = Command.make("status", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    const list = yield* (yield* BlixardClient).listCertificates(context.target)
    yield* Console.log(formatCertificates(list, context.json, Date.now()))
  })
).pipe(Command.withDescription("The nodes' certificates (serial, expiry, time left) and the revocation list."))

const reasonOption = Options.text("reason").pipe(
  Options.withPseudoName("TEXT"),
  Options.withDescription("Why (kept on the revocation list; default: revoked by an admin)."),
  Options.optional
)

/** `NODE` (a node id) or `SERIAL` (hex, as `cert status` shows it; colons and upper case are fine). */
export const parseRevokeTarget = (text: string, problems: Array<string>): { readonly node: NodeId } | { readonly serial: CertificateSerial } | undefined => {
  if (/^[1-9][0-9]{0,9}$/.test(text)) {
    const node = check(NodeId, Number(text), "NODE", problems)
    return node === undefined ? undefined : { node }
  }
  if (/^[0-9A-Fa-f:]+$/.test(text)) {
    const serial = check(CertificateSerial, normalizeSerial(text), "SERIAL", problems)
    return serial === undefined ? undefined : { serial }
  }
  problems.push(`${describe("NODE|SERIAL", text)}: a node id (e.g. 3) or a certificate serial number in hex (see blixard cluster cert status)`)
  return undefined
}

const revoke = Command.make(
  "revoke",
  {
    ...clientOptions,
    target: Args.text({ name: "NODE|SERIAL" }).pipe(Args.withDescription("A node id (every certificate it reported) or one certificate's serial number.")),
    reason: reasonOption
  },
  (args) =>
    Effect.gen(function* () {
      const context = yield* clientContext(args)
      const problems: Array<string> = []
      const target = parseRevokeTarget(args.target, problems)
      const reason = Option.isSome(args.reason) ? check(RevocationReason, args.reason.value, "--reason", problems) : "revoked by an admin"
      if (target === undefined || reason === undefined || problems.length > 0) return yield* invalidArgument(problems)
      const revoked = yield* (yield* BlixardClient).revokeCertificate(context.target, { ...target, reason })
      yield* Console.log(
        context.json
          ? JSON.stringify(Schema.encodeSync(Schema.Array(RevokedCertificate))(revoked), null, 2)
          : revoked.length === 0
            ? "already revoked"
            : revoked.map((r) => `revoked certificate ${r.serial}${r.node !== undefined ? ` of node ${r.node}` : ""}`).join("\n")
      )
    })
).pipe(Command.withDescription("Revoke a node's certificates (or one by serial number): peers and the API refuse them, and the node cannot renew. Admin only."))

export const certCommand = Command.make("cert").pipe(
  Command.withDescription("Node certificates: their expiry, and the revocation list."),
  Command.withSubcommands([status, revoke])
)

const short = (fingerprint: string): string => (fingerprint === "" ? "(the CA the cluster was founded with)" : `${fingerprint.slice(0, 16)}…`)

/** `cluster ca status` (and what `rotate` and `finish` answer): the phase, the CAs, who has moved. */
export const formatCaStatus = (status: CaStatus, asJson: boolean): string => {
  if (asJson) return JSON.stringify(Schema.encodeSync(CaStatus)(status), null, 2)
  const rotation = status.rotation
  if (rotation === undefined) return `phase: steady\nCA:    ${short(status.fingerprint)}\nNo CA rotation in progress (start one with blixard cluster ca rotate).`
  const list = (ids: ReadonlyArray<number>) => (ids.length === 0 ? "none" : ids.join(", "))
  return [
    "phase:   rotating (every node trusts both CAs)",
    `old CA:  ${short(rotation.previous)}`,
    `new CA:  ${short(rotation.fingerprint)}`,
    `started: ${new Date(rotation.startedAt).toISOString()}`,
    `moved to the new CA:   ${list(rotation.moved)}`,
    `still on the old CA:   ${list(rotation.waiting)}`,
    rotation.waiting.length === 0 ? "Every member moved: finish with blixard cluster ca finish." : "Running members move within seconds; finish once none is left on the old CA."
  ].join("\n")
}

const caStatus = Command.make("status", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    yield* Console.log(formatCaStatus(yield* (yield* BlixardClient).caStatus(context.target), context.json))
  })
).pipe(Command.withDescription("The cluster CA in force and the rotation in progress: which members moved to the new CA."))

const caRotate = Command.make("rotate", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    yield* Console.log(formatCaStatus(yield* (yield* BlixardClient).rotateCa(context.target), context.json))
  })
).pipe(
  Command.withDescription(
    "Start a CA rotation: a new CA for the cluster, its key sealed to each current member (every member must answer). Every node trusts both CAs until `finish`. Remove a member you no longer trust BEFORE rotating. Admin only."
  )
)

const caFinish = Command.make("finish", { ...clientOptions }, (args) =>
  Effect.gen(function* () {
    const context = yield* clientContext(args)
    yield* Console.log(formatCaStatus(yield* (yield* BlixardClient).finishCaRotation(context.target), context.json))
  })
).pipe(Command.withDescription("Finish the CA rotation: every node drops the old CA. Refused while a member holds only an old-CA certificate. Admin only."))

export const caCommand = Command.make("ca").pipe(
  Command.withDescription("The cluster CA: its rotation (status, rotate, finish)."),
  Command.withSubcommands([caStatus, caRotate, caFinish])
)
