/**
 * The entry of the CLI's start-up snapshot (`npm run build` writes `dist/snapshot/`, see
 * `scripts/bundle.mjs`): Node.js runs this module once, at build time, with
 * `--build-snapshot`, and saves the heap it leaves — every module of the client commands compiled
 * and evaluated, the command tree and the Effect Schema classes built — in a blob. `bin/blixard.js`
 * starts Node.js from that blob (`node --snapshot-blob BLOB blixard ARGS…`) and only `runCli` runs:
 * no module is read, compiled or evaluated per run.
 *
 * Nothing here may read the environment, the clock or the terminal at build time: the snapshot
 * would keep what it read (`Program.runCli` reseeds Effect's random generator for that reason).
 * Node.js cannot snapshot its HTTP and TLS modules, so the bundle loads them on first use. The
 * daemon (`blixard node` without a subcommand) and the watchdog never run from the snapshot:
 * `bin/blixard.js` starts them from the ES module bundle. Their modules, the simulator's and a
 * snapshot restore's are left out of it; a run that needs one after all is run again from the
 * bundle (`scripts/bundle.mjs`).
 */
import * as v8 from "node:v8"
import { runCli } from "./Program.js"

// Modules the client commands load on first use (`BlixardClient`), loaded now so that they are in
// the snapshot too.
const preload = Promise.all([import("../api/Client.js"), import("./Credentials.js"), import("../net/TlsIdentity.js")])

if (v8.startupSnapshot.isBuildingSnapshot()) {
  void preload.then(() => v8.startupSnapshot.setDeserializeMainFunction(() => runCli(process.argv)))
} else {
  runCli(process.argv)
}
