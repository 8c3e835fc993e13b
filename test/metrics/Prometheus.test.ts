import { Metric, MetricBoundaries } from "effect"
import { describe, expect, it } from "vitest"
import * as M from "../../src/metrics/Metrics.js"
import { escapeLabelValue, formatValue, labelName, metricName, render } from "../../src/metrics/Prometheus.js"
import { ParseError, parse, valueOf } from "../support/PrometheusText.js"

/** The exposition of this test's own metrics only (the registry is the process's). */
const renderPrefix = (prefix: string) => render(Metric.unsafeSnapshot().filter((pair) => pair.metricKey.name.startsWith(prefix)))

describe("Prometheus text rendering", () => {
  it("escapes backslash, double quote and line feed in label values, and they parse back to the original", () => {
    const gauge = Metric.gauge("test_escape_value", { description: "a gauge" })
    const nasty = 'a "quoted"\\path\nnext line'
    gauge.unsafeUpdate(3, M.tags(["where", nasty]))
    const text = renderPrefix("test_escape_")
    expect(text).toContain('test_escape_value{where="a \\"quoted\\"\\\\path\\nnext line"} 3\n')
    expect(text.split("\n").filter((line) => line.startsWith("test_escape_value"))).toHaveLength(1)
    expect(valueOf(parse(text), "test_escape_value", { where: nasty })).toBe(3)
    expect(escapeLabelValue("\\n")).toBe("\\\\n")
  })

  it("escapes the HELP text and writes one HELP and one TYPE line per family, before its samples", () => {
    const gauge = Metric.gauge("test_help_gauge", { description: "first line\nsecond \\ line" })
    gauge.unsafeUpdate(1, M.tags(["k", "a"]))
    gauge.unsafeUpdate(2, M.tags(["k", "b"]))
    const text = renderPrefix("test_help_")
    expect(text).toBe(
      [
        "# HELP test_help_gauge first line\\nsecond \\\\ line",
        "# TYPE test_help_gauge gauge",
        'test_help_gauge{k="a"} 1',
        'test_help_gauge{k="b"} 2',
        ""
      ].join("\n")
    )
    expect(parse(text).get("test_help_gauge")?.help).toBe("first line\nsecond \\ line")
  })

  it("renders a histogram as cumulative buckets ending with +Inf, then _sum and _count", () => {
    const histogram = Metric.histogram("test_hist_seconds", MetricBoundaries.fromIterable([0.1, 1, 10]), "durations")
    const labels = M.tags(["op", "save"])
    for (const value of [0.05, 0.5, 0.7, 5, 50]) histogram.unsafeUpdate(value, labels)
    const text = renderPrefix("test_hist_")
    expect(text).toContain(
      [
        "# TYPE test_hist_seconds histogram",
        'test_hist_seconds_bucket{op="save",le="0.1"} 1',
        'test_hist_seconds_bucket{op="save",le="1"} 3',
        'test_hist_seconds_bucket{op="save",le="10"} 4',
        'test_hist_seconds_bucket{op="save",le="+Inf"} 5',
        'test_hist_seconds_sum{op="save"} 56.25',
        'test_hist_seconds_count{op="save"} 5'
      ].join("\n")
    )
    const family = parse(text).get("test_hist_seconds")
    expect(family?.type).toBe("histogram")
    expect(family?.samples).toHaveLength(6)
  })

  it("names counters with _total (added when missing, not doubled) and types them counter", () => {
    const bare = Metric.counter("test_total_requests", { description: "no suffix", incremental: true })
    const suffixed = Metric.counter("test_total_errors_total", { description: "with suffix", incremental: true })
    bare.unsafeUpdate(2, M.noTags)
    suffixed.unsafeUpdate(1, M.noTags)
    const text = renderPrefix("test_total_")
    expect(text).toContain("# TYPE test_total_requests_total counter\ntest_total_requests_total 2\n")
    expect(text).toContain("# TYPE test_total_errors_total counter\ntest_total_errors_total 1\n")
    expect(text).not.toContain("_total_total")
    for (const family of parse(text).values()) expect(family.name.endsWith("_total")).toBe(true)
  })

  it("replaces characters Prometheus does not allow in names and label names, and formats special values", () => {
    expect(metricName("blixard.raft-term")).toBe("blixard_raft_term")
    expect(metricName("9lives")).toBe("_9lives")
    expect(labelName("peer-id")).toBe("peer_id")
    expect(labelName("__name__")).toBe("x__name__")
    expect(formatValue(Number.POSITIVE_INFINITY)).toBe("+Inf")
    expect(formatValue(Number.NEGATIVE_INFINITY)).toBe("-Inf")
    expect(formatValue(Number.NaN)).toBe("NaN")
    expect(formatValue(12n)).toBe("12")
    const gauge = Metric.gauge("test_names.odd-gauge")
    gauge.unsafeUpdate(1, M.tags(["bad-label", "x"]))
    const text = renderPrefix("test_names.")
    expect(text).toContain('test_names_odd_gauge{bad_label="x"} 1')
    parse(text)
  })

  it("keeps counting into the same series through reused tag arrays (no registry lookup per update)", () => {
    const counter = Metric.counter("test_reuse_total", { incremental: true })
    const labels = M.tags(["peer", "2"])
    expect(M.tags(["peer", "2"])).toBe(labels)
    for (let i = 0; i < 1000; i++) counter.unsafeUpdate(1, labels)
    counter.unsafeUpdate(-5, labels)
    expect(valueOf(parse(renderPrefix("test_reuse_")), "test_reuse_total", { peer: "2" })).toBe(1000)
  })

  it("Totals brings a counter up to a total kept elsewhere, and never lets it go down when that total restarts", () => {
    const counter = Metric.counter("test_totals_sent_total", { incremental: true })
    const totals = new M.Totals()
    const labels = M.tags(["peer", "3"])
    totals.advance(counter, labels, "sent 3", 10)
    totals.advance(counter, labels, "sent 3", 25)
    totals.advance(counter, labels, "sent 3", 4)
    expect(valueOf(parse(renderPrefix("test_totals_")), "test_totals_sent_total", { peer: "3" })).toBe(29)
  })
})

describe("the test's Prometheus text parser", () => {
  const rejects = (text: string, reason: RegExp) => {
    expect(() => parse(text)).toThrow(ParseError)
    expect(() => parse(text)).toThrow(reason)
  }

  it("rejects malformed expositions", () => {
    rejects('a{b="c} 1\n', /not closed/)
    rejects('a{b="\\t"} 1\n', /escape/)
    rejects('a{b="1",b="2"} 1\n', /twice/)
    rejects("a one\n", /not a number/)
    rejects("a 1", /line feed/)
    rejects("# TYPE a counter\n# TYPE a counter\na 1\n", /second TYPE/)
    rejects("a 1\n# TYPE a gauge\n", /after its samples/)
    rejects("a 1\nb 1\na{x=\"1\"} 2\n", /not together/)
    rejects("a 1\na 2\n", /second sample/)
    rejects('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n', /cumulative/)
    rejects('# TYPE h histogram\nh_bucket{le="1"} 1\nh_sum 1\nh_count 1\n', /\+Inf/)
    rejects('# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n', /differs/)
    rejects("9a 1\n", /no metric name/)
  })

  it("accepts what the format allows", () => {
    const families = parse('# some comment\n\n# HELP a the a\n# TYPE a gauge\na{x="1"} -Inf 1700000000000\na{x="2"} NaN\nb 1e3\n')
    expect(valueOf(families, "a", { x: "1" })).toBe(Number.NEGATIVE_INFINITY)
    expect(valueOf(families, "b")).toBe(1000)
  })
})
