/**
 * The watchdog's command line, read back: what `HostFence` starts it with gives the same settings,
 * and every bad, missing or unknown flag is named in one BLX_INVALID_ARGUMENT.
 */
import { Either } from "effect"
import { describe, expect, it } from "vitest"
import { NodeId } from "../../src/domain/NodeId.js"
import type { WatchdogConfig } from "../../src/node/Config.js"
import { watchdogArgs } from "../../src/node/HostFence.js"
import { parseWatchdogArgs } from "../../src/node/WatchdogArgs.js"

const config: WatchdogConfig = {
  id: NodeId.make(3),
  dataDir: "/var/lib/blixard",
  vmBackend: "systemd",
  microvmStateDir: "/var/lib/microvms",
  fencingMs: 4000,
  stopTimeoutMs: 1500
}

const problem = (args: ReadonlyArray<string>) => Either.match(parseWatchdogArgs(args), { onLeft: (e) => e, onRight: () => undefined })

describe("blixard node watchdog's flags", () => {
  it("reads back the settings the daemon starts it with, in any order and in --name=value form", () => {
    const args = watchdogArgs(config).slice(2)
    expect(parseWatchdogArgs(args)).toEqual(Either.right(config))
    const pairs = Array.from({ length: args.length / 2 }, (_, i) => `${args[2 * i]}=${args[2 * i + 1]}`).reverse()
    expect(parseWatchdogArgs(pairs)).toEqual(Either.right(config))
  })

  it("names every bad value, missing flag and unknown flag at once", () => {
    const error = problem(["--id", "x", "--data-dir", "relative", "--vm-backend", "qemu", "--fencing-ms", "5", "--stop-timeout-ms", "10", "--verbose"])
    expect(error?.code).toBe("BLX_INVALID_ARGUMENT")
    expect(error?.subject).toBe("--verbose")
    expect(error?.message).toMatch(/^--verbose: not a flag of blixard node watchdog/)
    for (const flag of ['--id "x"', '--data-dir "relative"', '--vm-backend "qemu"', "--fencing-ms 5", "--microvm-state-dir: missing"]) {
      expect(error?.message).toContain(flag)
    }
    expect(error?.message).not.toContain("--stop-timeout-ms")
  })

  it("a flag without its value, or given twice, is an error", () => {
    const args = watchdogArgs(config).slice(2)
    expect(problem([...args.slice(0, -1)])?.message).toBe("--stop-timeout-ms: needs a value (MS)")
    expect(problem([...args, "--id", "4"])?.message).toBe('--id "4": given twice')
  })
})
