/**
 * Shell completions, as the Nix package installs them: `blixard --completions SHELL` (written by
 * @effect/cli from the command tree) for bash, zsh and fish. The bash script is loaded into a real
 * bash and asked to complete.
 */
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { tempDir } from "../support/TempDir.js"

const root = path.resolve(import.meta.dirname, "../..")

const run = (file: string, args: ReadonlyArray<string>): Promise<{ code: number | null; stdout: string; stderr: string }> =>
  new Promise((resolve) =>
    execFile(file, args, { cwd: root, env: { PATH: process.env.PATH ?? "" } }, (error, stdout, stderr) =>
      resolve({ code: error === null ? 0 : typeof error.code === "number" ? error.code : null, stdout, stderr })
    )
  )

const completions = (shell: string) => run(process.execPath, [path.join(root, "bin/blixard.js"), "--completions", shell])

/** A shell's path, if it is installed. */
const shell = (name: string): string | undefined =>
  (process.env.PATH ?? "").split(":").map((dir) => path.join(dir, name)).find((file) => fs.existsSync(file))
const bash = shell("bash")
const zsh = shell("zsh")
const fish = shell("fish")
for (const [name, file] of [["bash", bash], ["zsh", zsh], ["fish", fish]] as const) {
  if (file === undefined) console.log(`test/cli/Completions.test.ts: loading the ${name} script SKIPPED: ${name} is not on PATH (apt-get install -y ${name})`)
}

describe("blixard --completions", () => {
  it.each(["bash", "zsh", "fish"])("writes a %s script naming every command, the new ones too", async (shell) => {
    const { code, stdout } = await completions(shell)
    expect(code).toBe(0)
    for (const word of ["snapshot", "restore", "no-start", "--all"]) expect(stdout, `${shell}: ${word}`).toContain(word.replace(/^--/, ""))
  })

  it.skipIf(bash === undefined)("the bash script loads in bash and completes subcommands and options", async () => {
    const script = path.join(tempDir("completions"), "blixard.bash")
    fs.writeFileSync(script, (await completions("bash")).stdout)
    // What bash does on TAB: COMP_WORDS/COMP_CWORD set, the registered function called, COMPREPLY read.
    const complete = (words: ReadonlyArray<string>) =>
      run(bash!, [
        "-c",
        `source "$1"; complete -p blixard >/dev/null || exit 9; COMP_WORDS=(${words.map((w) => `"${w}"`).join(" ")}); COMP_CWORD=${words.length - 1}; _blixard_bash_completions blixard "${words[words.length - 1]}" "${words[words.length - 2]}"; printf '%s\\n' "\${COMPREPLY[@]}"`,
        "completion",
        script
      ])
    const subcommands = await complete(["blixard", "cluster", "snapshot", ""])
    expect(subcommands.code).toBe(0)
    expect(subcommands.stdout.split(/\s+/)).toEqual(expect.arrayContaining(["save", "restore"]))
    const options = await complete(["blixard", "vm", "list", "--"])
    expect(options.stdout.split(/\s+/)).toEqual(expect.arrayContaining(["--limit", "--all", "--label", "--phase", "--node"]))
  })

  it.skipIf(zsh === undefined)("the zsh script is valid zsh", async () => {
    const script = path.join(tempDir("completions"), "_blixard")
    fs.writeFileSync(script, (await completions("zsh")).stdout)
    const checked = await run(zsh!, ["-n", script])
    expect(checked.stderr).toBe("")
    expect(checked.code).toBe(0)
  })

  it.skipIf(fish === undefined)("the fish script loads in fish and completes subcommands and options", async () => {
    const script = path.join(tempDir("completions"), "blixard.fish")
    fs.writeFileSync(script, (await completions("fish")).stdout)
    const complete = (line: string) => run(fish!, ["-c", `source $argv[1]; complete -C "${line}"`, script])
    expect((await complete("blixard cluster snapshot ")).stdout).toMatch(/^restore\t.*\nsave\t/m)
    expect((await complete("blixard vm list --")).stdout).toMatch(/^--all\t/m)
  })
})
