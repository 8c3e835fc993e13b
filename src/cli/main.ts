/**
 * The `blixard` executable as an ES module (`bin/blixard.js` imports its bundled form,
 * `dist/bundle/main.js`): what runs the daemon, and every command when the CLI's start-up snapshot
 * cannot be used (`SnapshotMain.ts` is the other entry; both run `Program.runCli`). Only what every
 * command needs is imported here; a command that needs heavy machinery (the daemon, the HTTP
 * client) loads it itself, so `blixard --help` starts nothing.
 *
 * `blixard node watchdog …` has its own entry (`node/WatchdogMain.ts`), which `bin/blixard.js` runs
 * without loading this module; run as this module (`node dist/src/cli/main.js node …`, the daemon
 * then starts its watchdog the same way), it is handed over to that entry too.
 */
import { runCli } from "./Program.js"

const [command, sub] = process.argv.slice(2)
if (command === "node" && sub === "watchdog") await import("../node/WatchdogMain.js")
else runCli(process.argv)
