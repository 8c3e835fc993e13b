/**
 * Runner scripts (`microvm-run`, `virtiofsd-run`, `tap-up`, `tap-down`, `microvm-shutdown`, …) are
 * started through a trampoline: `/bin/sh -c 'exec "$0" "$@"' SCRIPT ARGS…`.
 *
 * Why: libuv's spawn forks, execs in the child, and WAITS IN THE PARENT until that exec has
 * succeeded or failed (it reads a close-on-exec pipe), so that a missing program is an `error` event.
 * The exec of a script reads the script (and its interpreter) from its disk. The daemon and the
 * fencing watchdog check that a script is there (`diskReads.isExecutable`, off the JavaScript thread)
 * before running it, but a disk that stalls between the check and the exec — the Nix store's, its
 * metadata still cached and the script's content not — holds that exec, and with it the spawning
 * process's JavaScript thread: no timer, no signal, no other VM stopped, until the disk answers.
 * Through the trampoline the parent waits only for the exec of `/bin/sh`, a program every process
 * of the host runs, in memory; the script's exec happens in the shell, in the child, and a stall
 * holds the child only.
 *
 * What stays the same:
 * - the pid: the shell `exec`s the script, so the spawned process IS the script once the exec is
 *   done (same pid, same process group and session, same /proc start time, so pid files and
 *   adoption are unchanged); before it, signals go to the shell, whose default action for SIGTERM
 *   and SIGKILL ends it (it sets no traps, and a non-interactive `sh -c` ignores no signal);
 * - the arguments (`$0` is the script, `"$@"` its arguments, as given: no word splitting), the
 *   working directory, the environment (the shell passes its own on), the descriptors;
 * - the exit code and signal: those of the script.
 *
 * What changes: a script that cannot be executed after all (removed or made non-executable between
 * the check and the exec) is no longer a spawn `error`; the shell says why on stderr (the VM's log)
 * and exits 127 (not found) or 126 (not executable), which the callers report as a failed script,
 * naming it. Commands found on PATH (`nix`, `systemctl`, `journalctl`) are not run through it: their
 * absence must stay a spawn error, and they are not on the runner's disk.
 *
 * `/bin/sh` itself is on the root file system; on NixOS a link into the Nix store (bash). It is
 * exec'd all the time by the host's own processes, so its pages are in memory; a stall that holds
 * even those holds this process's next exec whatever it runs.
 */

/** The trampoline's shell. */
export const TrampolineShell = "/bin/sh"

const Exec = 'exec "$0" "$@"'

/** The command and arguments that run `program` with `args` through the trampoline. */
export const viaTrampoline = (
  program: string,
  args: ReadonlyArray<string> = []
): { readonly command: string; readonly args: ReadonlyArray<string> } => ({
  command: TrampolineShell,
  args: ["-c", Exec, program, ...args]
})
