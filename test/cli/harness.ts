/**
 * Running `blixard` in-process for tests: a recording console, an explicit environment and a client
 * layer of the test's choosing (a fake, or the real not-implemented one).
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import * as NodePath from "@effect/platform-node/NodePath"
import * as NodeTerminal from "@effect/platform-node/NodeTerminal"
import { Console, Effect, Layer, Schema } from "effect"
import * as TempDir from "../support/TempDir.js"
import { NodeId } from "../../src/domain/NodeId.js"
import { HostPort, NodeInfo } from "../../src/domain/NodeInfo.js"
import { Resources } from "../../src/domain/Resources.js"
import { VmName } from "../../src/domain/VmName.js"
import { FlakeConfig, FlakeRef, VmSpec } from "../../src/domain/VmSpec.js"
import { VmRecord, VmStatus } from "../../src/domain/VmStatus.js"
import { BlixardClient, type BlixardClientApi } from "../../src/cli/BlixardClient.js"
import { run } from "../../src/cli/Cli.js"
import { ClusterStatus, MemberStatus } from "../../src/domain/ClusterStatus.js"
import { ProcessEnv } from "../../src/cli/ProcessEnv.js"

/** A fresh directory under the system's temporary directory, removed after the test file. */
export const tempDir = (): string => TempDir.tempDir("cli")

export const stripAnsi = (text: string): string => text.replace(/\u001b\[[0-9;]*m/g, "")

const recordingConsole = (out: Array<string>, err: Array<string>): Console.Console => {
  const text = (args: ReadonlyArray<unknown>) => stripAnsi(args.map((a) => String(a)).join(" "))
  const to = (lines: Array<string>) => (...args: ReadonlyArray<unknown>) =>
    Effect.sync(() => {
      lines.push(text(args))
    })
  const unsafe = {
    ...globalThis.console,
    log: (...args: ReadonlyArray<unknown>) => void out.push(text(args)),
    info: (...args: ReadonlyArray<unknown>) => void out.push(text(args)),
    error: (...args: ReadonlyArray<unknown>) => void err.push(text(args)),
    warn: (...args: ReadonlyArray<unknown>) => void err.push(text(args))
  }
  return {
    [Console.TypeId]: Console.TypeId,
    assert: () => Effect.void,
    clear: Effect.void,
    count: () => Effect.void,
    countReset: () => Effect.void,
    debug: to(err),
    dir: to(out),
    dirxml: to(out),
    error: to(err),
    group: () => Effect.void,
    groupEnd: Effect.void,
    info: to(out),
    log: to(out),
    table: to(out),
    time: () => Effect.void,
    timeEnd: () => Effect.void,
    timeLog: () => Effect.void,
    trace: to(err),
    warn: to(err),
    unsafe
  }
}

export interface RunResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

/** Runs `blixard ...args` in this process; the client defaults to the real not-implemented layer. */
export const runBlixard = (
  args: ReadonlyArray<string>,
  options: {
    readonly env?: Readonly<Record<string, string | undefined>>
    readonly client?: Layer.Layer<BlixardClient>
  } = {}
): Effect.Effect<RunResult> =>
  Effect.suspend(() => {
    const out: Array<string> = []
    const err: Array<string> = []
    return run(["node", "blixard", ...args]).pipe(
      Effect.withConsole(recordingConsole(out, err)),
      Effect.provide(
        Layer.mergeAll(
          NodeFileSystem.layer,
          NodePath.layer,
          NodeTerminal.layer,
          ProcessEnv.layerRecord(options.env ?? {}),
          options.client ?? BlixardClient.layerHttp.pipe(Layer.provide(ProcessEnv.layerRecord(options.env ?? {})))
        )
      ),
      Effect.map((code) => ({ code, stdout: out.join("\n"), stderr: err.join("\n") }))
    )
  })

export interface Call {
  readonly method: keyof BlixardClientApi
  readonly args: ReadonlyArray<unknown>
}

/**
 * A client that answers with the given implementations and records every call; a method the test
 * did not give dies loudly.
 */
export const fakeClient = (implementations: Partial<BlixardClientApi>) => {
  const calls: Array<Call> = []
  const handler: ProxyHandler<object> = {
    get: (_, property) => {
      const method = property as keyof BlixardClientApi
      return (...args: ReadonlyArray<unknown>) => {
        calls.push({ method, args })
        const implementation = implementations[method] as ((...a: ReadonlyArray<unknown>) => unknown) | undefined
        return implementation === undefined
          ? Effect.dieMessage(`fake client: ${String(method)} was not expected in this test`)
          : implementation(...args)
      }
    }
  }
  const api = new Proxy({}, handler) as BlixardClientApi
  return { calls, layer: Layer.succeed(BlixardClient, api) }
}

// ----- fixtures -----

export const vmName = Schema.decodeSync(VmName)
export const nodeId = Schema.decodeSync(NodeId)
export const hostPort = Schema.decodeSync(HostPort)

export const vmRecord = (
  name: string,
  fields: {
    readonly node?: number
    readonly phase?: VmStatus["phase"]
    readonly desired?: VmRecord["desired"]
    readonly pendingReason?: string
    readonly lastError?: string
    readonly vcpus?: number
    readonly memoryMiB?: number
    readonly restarts?: number
  } = {}
): VmRecord =>
  new VmRecord({
    spec: new VmSpec({
      name: vmName(name),
      source: new FlakeConfig({ ref: Schema.decodeSync(FlakeRef)(`github:me/vms#${name}`) }),
      ...(fields.vcpus !== undefined ? { vcpus: fields.vcpus } : {}),
      ...(fields.memoryMiB !== undefined ? { memoryMiB: fields.memoryMiB } : {})
    }),
    desired: fields.desired ?? "running",
    ...(fields.node !== undefined ? { node: nodeId(fields.node) } : {}),
    ...(fields.pendingReason !== undefined ? { pendingReason: fields.pendingReason } : {}),
    status: new VmStatus({
      phase: fields.phase ?? "running",
      since: Date.UTC(2026, 0, 2, 3, 4, 5),
      restarts: fields.restarts ?? 0,
      ...(fields.lastError !== undefined ? { lastError: fields.lastError } : {})
    }),
    revision: 3,
    createdAt: Date.UTC(2026, 0, 1)
  })

export const nodeInfo = (id: number, address: string, labels: Record<string, string> = {}): NodeInfo =>
  new NodeInfo({
    id: nodeId(id),
    address: hostPort(address),
    capacity: new Resources({ vcpus: 8, memoryMiB: 16384 }),
    labels,
    state: "active",
    health: "up"
  })

export const clusterStatus = (leader: number | undefined, nodes: ReadonlyArray<NodeInfo>): ClusterStatus =>
  new ClusterStatus({
    node: nodeId(1),
    ...(leader !== undefined ? { leader: nodeId(leader) } : {}),
    term: 4,
    commit: 42,
    applied: 42,
    members: nodes.map(
      (n) =>
        new MemberStatus({
          id: n.id,
          address: n.address,
          role: n.id === leader ? "leader" : "follower",
          match: 42,
          lag: n.id === leader ? 0 : 1,
          ...(n.id === leader ? {} : { lastContactMs: 12 })
        })
    )
  })

