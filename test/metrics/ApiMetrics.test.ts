import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import { render } from "../../src/metrics/Prometheus.js"
import { parse, sumOf, valueOf } from "../support/PrometheusText.js"
import { serve } from "../api/harness.js"

const token = "metrics-test-token"
const exposition = Effect.map(Metric.snapshot, (pairs) => render(pairs.filter((pair) => pair.metricKey.name.startsWith("blixard_api_"))))

const get = (url: string, auth = true) =>
  Effect.promise(async () => {
    const response = await fetch(url, { headers: auth ? { authorization: `Bearer ${token}` } : {} })
    return { status: response.status, type: response.headers.get("content-type"), text: await response.text() }
  })

describe("GET /metrics on the API server", () => {
  it.scopedLive("needs a token; counts requests by route template and status, unknown paths as one route", () =>
    Effect.gen(function* () {
      const { url } = yield* serve({ auth: { adminTokens: [token], hint: "the token is in the test" }, metrics: exposition })
      expect((yield* get(`${url}/metrics`, false)).status).toBe(401)
      const first = yield* get(`${url}/metrics`)
      expect(first.status).toBe(200)
      expect(first.type).toBe("text/plain; version=0.0.4; charset=utf-8")
      const before = parse(first.text)
      const count = (families: typeof before, labels: Record<string, string>) => sumOf(families, "blixard_api_requests_total", labels)

      for (const name of ["a", "b", "c"]) expect((yield* get(`${url}/v1/vms/${name}`)).status).toBe(404)
      for (const path of ["/nope/1", "/nope/2"]) expect((yield* get(`${url}${path}`)).status).toBe(404)
      expect((yield* get(`${url}/v1/vms`, false)).status).toBe(401)

      const after = parse((yield* get(`${url}/metrics`)).text)
      expect(count(after, { route: "/v1/vms/:name", status: "404" }) - count(before, { route: "/v1/vms/:name", status: "404" })).toBe(3)
      expect(count(after, { route: "unmatched", status: "404" }) - count(before, { route: "unmatched", status: "404" })).toBe(2)
      expect(count(after, { method: "GET", route: "/v1/vms", status: "401" }) - count(before, { method: "GET", route: "/v1/vms", status: "401" })).toBe(1)
      // The unauthenticated scrape and the first one (each counted once its answer ended).
      expect(count(after, { route: "/metrics", status: "401" }) - count(before, { route: "/metrics", status: "401" })).toBe(0)
      expect(count(after, { route: "/metrics", status: "200" })).toBeGreaterThanOrEqual(1)
      // No series per VM name or unknown path.
      expect(after.get("blixard_api_requests_total")?.samples.some((s) => /\/v1\/vms\/[abc]|nope/.test(s.labels.route ?? ""))).toBe(false)
      expect(valueOf(after, "blixard_api_request_duration_seconds_count", { method: "GET", route: "/v1/vms/:name" })).toBeGreaterThanOrEqual(3)
    })
  )

  it.scopedLive("is 404 when the server is given no metrics", () =>
    Effect.gen(function* () {
      const { url } = yield* serve({ auth: { adminTokens: [token], hint: "the token is in the test" } })
      expect((yield* get(`${url}/metrics`)).status).toBe(404)
    })
  )
})
