/**
 * `blixard --completions bash`. @effect/cli writes the script (as it does for zsh and fish), but its
 * bash script (0.77) finds a command two or more levels down (`vm list`, `cluster snapshot save`)
 * by matching `"${cmd},${word}"`, where `cmd` is the path so far joined by `__`, against case
 * labels of the whole path joined by `,` (`blixard,vm,list)`): they never match, so bash completed
 * only the top level. The labels are rewritten to what the loop builds (`blixard__vm,list)`).
 */
import * as Command from "@effect/cli/Command"
import { Console, Effect } from "effect"

/** A case label of the path-walking loop: `blixard,cluster,snapshot)`. */
const pathLabel = /^(\s*)([A-Za-z0-9_-]+(?:,[A-Za-z0-9_-]+){2,})\)$/

export const fixBashScript = (lines: ReadonlyArray<string>): Array<string> =>
  lines.map((line) => {
    const label = pathLabel.exec(line)
    if (label === null) return line
    const parts = label[2]!.split(",")
    return `${label[1]}${parts.slice(0, -1).join("__")},${parts[parts.length - 1]})`
  })

/** Whether `args` (after the program's name) ask for the bash script. */
export const asksForBash = (args: ReadonlyArray<string>): boolean =>
  (args.length === 2 && args[0] === "--completions" && args[1] === "bash") || (args.length === 1 && args[0] === "--completions=bash")

export const printBashCompletions = <Name extends string, R, E, A>(command: Command.Command<Name, R, E, A>, programName: string) =>
  Effect.flatMap(Command.getBashCompletions(command, programName), (lines) => Console.log(fixBashScript(lines).join("\n")))
