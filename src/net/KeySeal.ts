/**
 * Sealing a secret (a new CA's private key) to one node, so that it can travel in a Raft entry that
 * every node, and every later snapshot, stores: only the node it is sealed to can open it.
 *
 * ECIES over the node's certificate key, with `node:crypto` only:
 *
 *   e        = a fresh P-256 key pair, one per sealed copy
 *   shared   = ECDH(e.private, node certificate's public key)        (crypto.diffieHellman)
 *   key      = HKDF-SHA256(shared, salt = e.public (SPKI DER), info = context), 32 bytes
 *   sealed   = AES-256-GCM(key, 12-byte random iv, plaintext, additional data = context)
 *
 * `context` names what is sealed, for which cluster, node and CA (`caKeyContext`): a copy moved to
 * another node's slot, or another rotation's entry, fails authentication instead of opening. The node
 * keys are the certificates' ECDSA P-256 keys; the same key does ECDH (the certificates allow key
 * agreement). A node whose key changed since (a renewal in between) cannot open its copy: it says so.
 */
import { Either } from "effect"
import * as crypto from "node:crypto"
import { SealedKey } from "../domain/CaRotation.js"
import { trusted } from "../domain/Decode.js"
import { NodeId } from "../domain/NodeId.js"

const derive = (shared: Buffer, salt: Buffer, context: string): Buffer =>
  Buffer.from(crypto.hkdfSync("sha256", shared, salt, Buffer.from(context, "utf8"), 32))

/** What binds a sealed CA key to its cluster, node and CA (the new CA's SHA-256). */
export const caKeyContext = (clusterId: string, node: number, caFingerprint: string): string =>
  `blixard sealed CA key v1\n${clusterId}\n${node}\n${caFingerprint}`

/** `plaintext` sealed to node `node`, whose certificate (PEM) holds the public key. */
export const seal = (plaintext: string, node: number, certificatePem: string, context: string): SealedKey => {
  const recipient = new crypto.X509Certificate(certificatePem).publicKey
  const ephemeral = crypto.generateKeyPairSync("ec", { namedCurve: "prime256v1" })
  const ephemeralDer = ephemeral.publicKey.export({ format: "der", type: "spki" })
  const key = derive(crypto.diffieHellman({ privateKey: ephemeral.privateKey, publicKey: recipient }), ephemeralDer, context)
  const iv = crypto.randomBytes(12)
  const cipher = crypto.createCipheriv("aes-256-gcm", key, iv)
  cipher.setAAD(Buffer.from(context, "utf8"))
  const ciphertext = Buffer.concat([cipher.update(plaintext, "utf8"), cipher.final()])
  return new SealedKey(
    {
      node: NodeId.make(node),
      ephemeralKey: ephemeralDer.toString("base64"),
      iv: iv.toString("base64"),
      ciphertext: ciphertext.toString("base64"),
      tag: cipher.getAuthTag().toString("base64")
    },
    trusted
  )
}

/** Opens `sealed` with the node's private key (PEM); the reason when it cannot. */
export const open = (sealed: SealedKey, privateKeyPem: string, context: string): Either.Either<string, string> => {
  try {
    const ephemeralDer = Buffer.from(sealed.ephemeralKey, "base64")
    const ephemeral = crypto.createPublicKey({ key: ephemeralDer, format: "der", type: "spki" })
    const key = derive(crypto.diffieHellman({ privateKey: crypto.createPrivateKey(privateKeyPem), publicKey: ephemeral }), ephemeralDer, context)
    const decipher = crypto.createDecipheriv("aes-256-gcm", key, Buffer.from(sealed.iv, "base64"))
    decipher.setAAD(Buffer.from(context, "utf8"))
    decipher.setAuthTag(Buffer.from(sealed.tag, "base64"))
    return Either.right(Buffer.concat([decipher.update(Buffer.from(sealed.ciphertext, "base64")), decipher.final()]).toString("utf8"))
  } catch (e) {
    return Either.left(
      `the sealed key for node ${sealed.node} does not open with this key (${e instanceof Error ? e.message : String(e)}): it was sealed to another key, for another node or CA, or altered`
    )
  }
}
