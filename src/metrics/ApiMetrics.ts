/**
 * Request metrics of the API server: every answered request counts once, by method, route (the
 * endpoint's path template, so `/v1/vms/web` and `/v1/vms/db` are one series) and status, and its
 * duration goes into a histogram by method and route. A request whose client went away before the
 * answer ended counts with status `aborted`.
 */
import type * as http from "node:http"
import * as M from "./Metrics.js"

/** Path templates by route, made on first use: `["v1", "vms", undefined]` and `["name"]` → `/v1/vms/:name`. */
export const template = (segments: ReadonlyArray<string | undefined>, params: ReadonlyArray<string>): string => {
  let at = 0
  return `/${segments.map((segment) => segment ?? `:${params[at++] ?? "param"}`).join("/")}`
}

/**
 * Observes one request until its connection's answer is done. `routeOf` names the route for the
 * method and path (`unmatched` for no endpoint, so unknown paths cannot grow the label set).
 */
export const observe = (
  request: http.IncomingMessage,
  response: http.ServerResponse,
  routeOf: (method: string, path: string) => string
): void => {
  const started = performance.now()
  response.once("close", () => {
    const method = request.method ?? "GET"
    const url = request.url ?? "/"
    const at = url.indexOf("?")
    const route = routeOf(method, at === -1 ? url : url.slice(0, at))
    const status = response.writableFinished ? String(response.statusCode) : "aborted"
    const key = `${method} ${route} ${status}`
    let series = seriesByKey.get(key)
    if (series === undefined) {
      series = { count: M.tags(["method", method], ["route", route], ["status", status]), duration: M.tags(["method", method], ["route", route]) }
      seriesByKey.set(key, series)
    }
    M.apiRequests.unsafeUpdate(1, series.count)
    M.apiRequestSeconds.unsafeUpdate((performance.now() - started) / 1000, series.duration)
  })
}

/** The tags of each method, route and status seen (bounded: routes are the API's templates). */
const seriesByKey = new Map<string, { readonly count: ReturnType<typeof M.tags>; readonly duration: ReturnType<typeof M.tags> }>()
