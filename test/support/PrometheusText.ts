/**
 * A strict parser of the Prometheus text exposition format 0.0.4, for tests: a scrape that a real
 * Prometheus would reject (or read differently) fails here with the line and the reason.
 *
 * Checked: every line is a comment (`# HELP`, `# TYPE`, or another comment), blank, or a sample
 * `name{label="value",…} value [timestamp]`; names and label names in Prometheus's alphabet; label
 * values with only `\\`, `\"` and `\n` escapes; no label twice in a sample; values Go floats
 * (`+Inf`, `-Inf`, `NaN`); at most one HELP and one TYPE per family, the TYPE before its samples; a
 * family's lines together; no sample twice; a histogram's buckets cumulative, ending with
 * `le="+Inf"` equal to its `_count`, with `_sum`; the text ends with a line feed.
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped"

export interface Sample {
  readonly name: string
  readonly labels: Readonly<Record<string, string>>
  readonly value: number
}

export interface Family {
  readonly name: string
  type: MetricType
  help: string | undefined
  readonly samples: Array<Sample>
}

const metricName = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/
const labelName = /^[a-zA-Z_][a-zA-Z0-9_]*$/
const types: ReadonlySet<string> = new Set(["counter", "gauge", "histogram", "summary", "untyped"])

export class ParseError extends Error {}

const parseValue = (text: string, where: string): number => {
  if (text === "+Inf" || text === "Inf") return Number.POSITIVE_INFINITY
  if (text === "-Inf") return Number.NEGATIVE_INFINITY
  if (text === "NaN") return Number.NaN
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text)) throw new ParseError(`${where}: "${text}" is not a number`)
  return Number(text)
}

/** The labels between `{` and `}` starting at `at`; answers them and the index after `}`. */
const parseLabels = (line: string, at: number, where: string): { labels: Record<string, string>; end: number } => {
  const labels: Record<string, string> = {}
  let i = at + 1
  for (;;) {
    if (line[i] === "}") return { labels, end: i + 1 }
    const nameEnd = line.indexOf("=", i)
    if (nameEnd === -1) throw new ParseError(`${where}: a label without "="`)
    const name = line.slice(i, nameEnd)
    if (!labelName.test(name)) throw new ParseError(`${where}: "${name}" is not a valid label name`)
    if (name in labels) throw new ParseError(`${where}: label "${name}" appears twice`)
    if (line[nameEnd + 1] !== '"') throw new ParseError(`${where}: the value of label "${name}" is not quoted`)
    let value = ""
    let j = nameEnd + 2
    for (;;) {
      const c = line[j]
      if (c === undefined) throw new ParseError(`${where}: the value of label "${name}" is not closed`)
      if (c === '"') break
      if (c === "\\") {
        const next = line[j + 1]
        if (next === "\\") value += "\\"
        else if (next === '"') value += '"'
        else if (next === "n") value += "\n"
        else throw new ParseError(`${where}: "\\${next ?? ""}" is not an escape a label value may have`)
        j += 2
        continue
      }
      value += c
      j++
    }
    labels[name] = value
    i = j + 1
    if (line[i] === ",") i++
    else if (line[i] !== "}") throw new ParseError(`${where}: expected "," or "}" after label "${name}"`)
  }
}

/** The family a sample name belongs to, given the families declared so far (a histogram's `_bucket`, `_sum`, `_count`). */
const familyOf = (name: string, declared: ReadonlyMap<string, Family>): string => {
  for (const suffix of ["_bucket", "_sum", "_count"]) {
    if (!name.endsWith(suffix)) continue
    const base = name.slice(0, -suffix.length)
    const family = declared.get(base)
    if (family !== undefined && (family.type === "histogram" || (family.type === "summary" && suffix !== "_bucket"))) return base
  }
  return name
}

const checkHistogram = (family: Family): void => {
  const series = new Map<string, { buckets: Array<[number, number]>; sum?: number; count?: number }>()
  for (const sample of family.samples) {
    const { le, ...rest } = sample.labels
    const key = JSON.stringify(Object.entries(rest).sort())
    const entry = series.get(key) ?? { buckets: [] }
    series.set(key, entry)
    if (sample.name === `${family.name}_bucket`) {
      if (le === undefined) throw new ParseError(`histogram ${family.name}: a bucket without "le"`)
      entry.buckets.push([parseValue(le, `histogram ${family.name}`), sample.value])
    } else if (sample.name === `${family.name}_sum`) entry.sum = sample.value
    else if (sample.name === `${family.name}_count`) entry.count = sample.value
    else throw new ParseError(`histogram ${family.name}: unexpected sample ${sample.name}`)
  }
  for (const [key, entry] of series) {
    const where = `histogram ${family.name}${key}`
    if (entry.sum === undefined || entry.count === undefined) throw new ParseError(`${where}: no _sum or no _count`)
    let previous: [number, number] | undefined
    for (const bucket of entry.buckets) {
      if (previous !== undefined && (bucket[0] <= previous[0] || bucket[1] < previous[1])) {
        throw new ParseError(`${where}: buckets are not in increasing order of le with cumulative counts`)
      }
      previous = bucket
    }
    if (previous === undefined || previous[0] !== Number.POSITIVE_INFINITY) throw new ParseError(`${where}: no le="+Inf" bucket`)
    if (previous[1] !== entry.count) throw new ParseError(`${where}: the +Inf bucket (${previous[1]}) differs from _count (${entry.count})`)
  }
}

/** The families of an exposition, by name; throws `ParseError` on the first problem. */
export const parse = (text: string): Map<string, Family> => {
  if (text.length > 0 && !text.endsWith("\n")) throw new ParseError("the exposition does not end with a line feed")
  const families = new Map<string, Family>()
  const finished = new Set<string>()
  const seen = new Set<string>()
  let current: string | undefined
  const enter = (name: string, where: string) => {
    if (current === name) return
    if (finished.has(name)) throw new ParseError(`${where}: the lines of ${name} are not together`)
    if (current !== undefined) finished.add(current)
    current = name
  }
  const lines = text.split("\n")
  lines.pop()
  for (const [index, line] of lines.entries()) {
    const where = `line ${index + 1} (${JSON.stringify(line)})`
    if (line.trim() === "") continue
    if (line.startsWith("#")) {
      const match = /^#\s+(HELP|TYPE)\s+(\S+)(?:\s(.*))?$/.exec(line)
      if (match === null) continue
      const [, keyword, name, rest] = match as unknown as [string, string, string, string | undefined]
      if (!metricName.test(name)) throw new ParseError(`${where}: "${name}" is not a valid metric name`)
      enter(name, where)
      const family = families.get(name) ?? { name, type: "untyped" as MetricType, help: undefined, samples: [] }
      families.set(name, family)
      if (keyword === "HELP") {
        if (family.help !== undefined) throw new ParseError(`${where}: a second HELP for ${name}`)
        const help = rest ?? ""
        if (/\\[^\\n]/.test(help.replace(/\\\\/g, ""))) throw new ParseError(`${where}: an escape a HELP text may not have`)
        family.help = help.replace(/\\(\\|n)/g, (_, c: string) => (c === "n" ? "\n" : "\\"))
      } else {
        if (family.samples.length > 0) throw new ParseError(`${where}: the TYPE of ${name} comes after its samples`)
        if (rest === undefined || !types.has(rest)) throw new ParseError(`${where}: "${rest ?? ""}" is not a metric type`)
        if (seen.has(`TYPE ${name}`)) throw new ParseError(`${where}: a second TYPE for ${name}`)
        seen.add(`TYPE ${name}`)
        family.type = rest as MetricType
      }
      continue
    }
    const nameMatch = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line)
    if (nameMatch === null) throw new ParseError(`${where}: no metric name`)
    const name = nameMatch[0]
    let at = name.length
    let labels: Record<string, string> = {}
    if (line[at] === "{") ({ labels, end: at } = parseLabels(line, at, where))
    if (line[at] !== " ") throw new ParseError(`${where}: expected a space before the value`)
    const parts = line.slice(at + 1).split(" ")
    if (parts.length < 1 || parts.length > 2 || parts[0] === "") throw new ParseError(`${where}: expected a value and an optional timestamp`)
    const value = parseValue(parts[0]!, where)
    if (parts.length === 2 && !/^-?\d+$/.test(parts[1]!)) throw new ParseError(`${where}: "${parts[1]}" is not a timestamp`)
    const familyName = familyOf(name, families)
    enter(familyName, where)
    const family = families.get(familyName) ?? { name: familyName, type: "untyped" as MetricType, help: undefined, samples: [] }
    families.set(familyName, family)
    const identity = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seen.has(identity)) throw new ParseError(`${where}: a second sample of ${identity}`)
    seen.add(identity)
    family.samples.push({ name, labels, value })
  }
  for (const family of families.values()) if (family.type === "histogram") checkHistogram(family)
  return families
}

/** The value of the one sample of `name` whose labels include `labels`; throws if there is none or several. */
export const valueOf = (families: ReadonlyMap<string, Family>, name: string, labels: Readonly<Record<string, string>> = {}): number => {
  const matches = [...families.values()]
    .flatMap((family) => family.samples)
    .filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
  if (matches.length !== 1) throw new Error(`expected one sample of ${name}${JSON.stringify(labels)}, found ${matches.length}`)
  return matches[0]!.value
}

/** The sum of the samples of `name` whose labels include `labels` (0 if there is none). */
export const sumOf = (families: ReadonlyMap<string, Family>, name: string, labels: Readonly<Record<string, string>> = {}): number =>
  [...families.values()]
    .flatMap((family) => family.samples)
    .filter((sample) => sample.name === name && Object.entries(labels).every(([key, value]) => sample.labels[key] === value))
    .reduce((total, sample) => total + sample.value, 0)
