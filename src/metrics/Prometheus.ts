/**
 * Renders Effect metrics (`Metric.snapshot`: the global metric registry) in the Prometheus text
 * exposition format, version 0.0.4 — what `GET /metrics` answers.
 *
 * Written here rather than taken from a library: Effect 3 ships no Prometheus exporter of its own,
 * and the one route to it (`@effect/opentelemetry` with OpenTelemetry's Prometheus exporter) would
 * add an OpenTelemetry SDK and a second HTTP server to every node for what is a page of code. The
 * format is small and stable: https://prometheus.io/docs/instrumenting/exposition_formats/.
 *
 * - One `# HELP` and one `# TYPE` line per metric family, then its samples; families sorted by name,
 *   samples by their labels, so two scrapes of the same state are the same text.
 * - A counter is exposed with the `_total` suffix (added when its name lacks it).
 * - A histogram's buckets are cumulative, each with its `le` bound, ending with `le="+Inf"`, then
 *   `_sum` and `_count`. A summary gets its quantiles, `_sum` and `_count`; a frequency becomes a
 *   counter with a `key` label per value counted.
 * - Names and label names outside Prometheus's alphabet have the offending characters replaced by
 *   `_`; label values and help texts are escaped (`\\`, `\"`, `\n`).
 */
import { Option } from "effect"
import type * as MetricKey from "effect/MetricKey"
import * as MetricKeyType from "effect/MetricKeyType"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"

/** The `Content-Type` of the text format this module writes. */
export const contentType = "text/plain; version=0.0.4; charset=utf-8"

type Sample = { readonly suffix: string; readonly labels: ReadonlyArray<readonly [string, string]>; readonly value: number | bigint }

interface Family {
  readonly name: string
  readonly type: "counter" | "gauge" | "histogram" | "summary"
  help: string
  readonly series: Array<{ readonly labels: ReadonlyArray<readonly [string, string]>; readonly samples: Array<Sample> }>
}

/** A metric name as Prometheus accepts it: `[a-zA-Z_:][a-zA-Z0-9_:]*`. */
export const metricName = (name: string): string => {
  const replaced = name.replace(/[^a-zA-Z0-9_:]/g, "_")
  return /^[a-zA-Z_:]/.test(replaced) ? replaced : `_${replaced}`
}

/** A label name as Prometheus accepts it: `[a-zA-Z_][a-zA-Z0-9_]*` (and not starting with `__`, which is reserved). */
export const labelName = (name: string): string => {
  const replaced = name.replace(/[^a-zA-Z0-9_]/g, "_")
  const valid = /^[a-zA-Z_]/.test(replaced) ? replaced : `_${replaced}`
  return valid.startsWith("__") ? `x${valid}` : valid
}

/** A label value between double quotes: backslash, double quote and line feed escaped. */
export const escapeLabelValue = (value: string): string => value.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")

/** A `# HELP` text: backslash and line feed escaped. */
export const escapeHelp = (text: string): string => text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n")

/** A sample value: Go's float syntax as Prometheus parses it (`+Inf`, `-Inf`, `NaN`). */
export const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

const formatLabels = (labels: ReadonlyArray<readonly [string, string]>): string =>
  labels.length === 0 ? "" : `{${labels.map(([key, value]) => `${key}="${escapeLabelValue(value)}"`).join(",")}}`

const labelsOf = (key: MetricKey.MetricKey.Untyped): Array<readonly [string, string]> => {
  const seen = new Map<string, string>()
  for (const tag of key.tags) seen.set(labelName(tag.key), tag.value)
  return [...seen].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
}

const typeOf = (keyType: MetricKeyType.MetricKeyType<unknown, unknown>): Family["type"] | undefined => {
  if (MetricKeyType.isCounterKey(keyType) || MetricKeyType.isFrequencyKey(keyType)) return "counter"
  if (MetricKeyType.isGaugeKey(keyType)) return "gauge"
  if (MetricKeyType.isHistogramKey(keyType)) return "histogram"
  if (MetricKeyType.isSummaryKey(keyType)) return "summary"
  return undefined
}

const samplesOf = (state: unknown, labels: ReadonlyArray<readonly [string, string]>): Array<Sample> => {
  const with_ = (extra: string, value: string) =>
    [...labels.filter(([key]) => key !== extra), [extra, value] as const]
  if (MetricState.isCounterState(state)) return [{ suffix: "", labels, value: state.count }]
  if (MetricState.isGaugeState(state)) return [{ suffix: "", labels, value: state.value }]
  if (MetricState.isHistogramState(state)) {
    const samples: Array<Sample> = []
    let sawInfinity = false
    for (const [bound, count] of state.buckets) {
      if (bound === Number.POSITIVE_INFINITY) sawInfinity = true
      samples.push({ suffix: "_bucket", labels: with_("le", formatValue(bound)), value: count })
    }
    if (!sawInfinity) samples.push({ suffix: "_bucket", labels: with_("le", "+Inf"), value: state.count })
    samples.push({ suffix: "_sum", labels, value: state.sum }, { suffix: "_count", labels, value: state.count })
    return samples
  }
  if (MetricState.isSummaryState(state)) {
    const samples: Array<Sample> = state.quantiles.map(([quantile, value]) => ({
      suffix: "",
      labels: with_("quantile", formatValue(quantile)),
      value: Option.getOrElse(value, () => Number.NaN)
    }))
    samples.push({ suffix: "_sum", labels, value: state.sum }, { suffix: "_count", labels, value: state.count })
    return samples
  }
  if (MetricState.isFrequencyState(state)) {
    return [...state.occurrences].map(([value, count]) => ({ suffix: "", labels: with_("key", value), value: count }))
  }
  return []
}

const compareLabels = (a: ReadonlyArray<readonly [string, string]>, b: ReadonlyArray<readonly [string, string]>): number => {
  const x = formatLabels(a)
  const y = formatLabels(b)
  return x < y ? -1 : x > y ? 1 : 0
}

/**
 * The exposition of `pairs` (`Metric.unsafeSnapshot()` or what `Metric.snapshot` gives). A name
 * registered as two different types (say, a counter and a gauge) is a programming error: the
 * second type's series are left out rather than making the whole page unparseable.
 */
export const render = (pairs: Iterable<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  for (const pair of pairs) {
    const key = pair.metricKey
    const type = typeOf(key.keyType)
    if (type === undefined) continue
    const base = metricName(key.name)
    const name = type === "counter" && !base.endsWith("_total") ? `${base}_total` : base
    let family = families.get(name)
    if (family === undefined) {
      family = { name, type, help: "", series: [] }
      families.set(name, family)
    } else if (family.type !== type) {
      continue
    }
    if (family.help === "" && Option.isSome(key.description)) family.help = key.description.value
    const labels = labelsOf(key)
    family.series.push({ labels, samples: samplesOf(pair.metricState, labels) })
  }
  const lines: Array<string> = []
  for (const family of [...families.values()].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help === "" ? family.name : family.help)}`)
    lines.push(`# TYPE ${family.name} ${family.type}`)
    for (const series of family.series.sort((a, b) => compareLabels(a.labels, b.labels))) {
      for (const sample of series.samples) {
        lines.push(`${family.name}${sample.suffix}${formatLabels(sample.labels)} ${formatValue(sample.value)}`)
      }
    }
  }
  return lines.length === 0 ? "" : `${lines.join("\n")}\n`
}
