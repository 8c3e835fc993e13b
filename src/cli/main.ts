/**
 * The `blixard` executable (`bin/blixard.js` imports the compiled form). Only what every command
 * needs is imported here; a command that needs heavy machinery (the daemon, the HTTP client) loads
 * it itself, so `blixard --help` starts nothing.
 *
 * `blixard node watchdog …` has its own entry (`node/WatchdogMain.ts`), which `bin/blixard.js` runs
 * without loading this module; run as this module (`node dist/src/cli/main.js node …`, the daemon
 * then starts its watchdog the same way), it is handed over to that entry too.
 */
import { runCli } from "./Program.js"

const [command, sub] = process.argv.slice(2)
if (command === "node" && sub === "watchdog") await import("../node/WatchdogMain.js")
else runCli(process.argv)
