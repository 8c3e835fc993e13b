/**
 * A Server-Sent Events client for tests, independent of the CLI's: `node:http` reading the raw
 * stream and parsing the framing as the WHATWG spec says (fields `id`, `event`, `data`, comments,
 * CRLF or LF line ends, a message dispatched at a blank line, `id` persisting across messages).
 */
import * as http from "node:http"
import * as https from "node:https"

export interface SseMessage {
  /** The last event id as of this message (the spec's "last event ID buffer"). */
  readonly id: string
  readonly event: string
  readonly data: string
}

export interface SseConnection {
  readonly status: number
  readonly headers: http.IncomingHttpHeaders
  readonly messages: Array<SseMessage>
  /** The last event id as of now (an id-only message sets it too, as in EventSource). */
  lastId: string
  /** Comment lines received (heartbeats). */
  comments: number
  /** Whether the server ended the stream (or the connection dropped). */
  ended: boolean
  /** The body, for a response that is not a stream. */
  body: string
  close(): void
}

/**
 * Opens `url` with `headers`; resolves once the response's headers arrived. An `https:` URL is
 * checked against `ca` (the cluster CA; the nodes' certificates name them by cluster URI, not host).
 */
export const connect = (url: string, headers: Record<string, string> = {}, ca?: string): Promise<SseConnection> =>
  new Promise((resolve, reject) => {
    const options = { headers: { accept: "text/event-stream", ...headers }, agent: false as const }
    const get = (callback: (response: http.IncomingMessage) => void) =>
      url.startsWith("https:") ? https.get(url, { ...options, ca, checkServerIdentity: () => undefined }, callback) : http.get(url, options, callback)
    const request = get((response) => {
      const connection: SseConnection = {
        status: response.statusCode ?? 0,
        headers: response.headers,
        messages: [],
        lastId: "",
        comments: 0,
        ended: false,
        body: "",
        close: () => request.destroy()
      }
      const streaming = String(response.headers["content-type"] ?? "").startsWith("text/event-stream")
      let pending = ""
      let id = ""
      let event = ""
      let data: Array<string> = []
      let hasData = false
      const line = (text: string) => {
        if (text === "") {
          connection.lastId = id
          if (hasData) connection.messages.push({ id, event: event === "" ? "message" : event, data: data.join("\n") })
          event = ""
          data = []
          hasData = false
          return
        }
        if (text.startsWith(":")) return void connection.comments++
        const colon = text.indexOf(":")
        const field = colon === -1 ? text : text.slice(0, colon)
        let value = colon === -1 ? "" : text.slice(colon + 1)
        if (value.startsWith(" ")) value = value.slice(1)
        if (field === "id" && !value.includes("\0")) id = value
        else if (field === "event") event = value
        else if (field === "data") {
          data.push(value)
          hasData = true
        }
      }
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => {
        if (!streaming) return void (connection.body += chunk)
        pending += chunk
        for (;;) {
          const at = pending.search(/\r\n|\r|\n/)
          if (at === -1) break
          const end = pending.startsWith("\r\n", at) ? at + 2 : at + 1
          line(pending.slice(0, at))
          pending = pending.slice(end)
        }
      })
      const done = () => void (connection.ended = true)
      response.on("end", done)
      response.on("close", done)
      response.on("error", done)
      resolve(connection)
    })
    request.on("error", reject)
  })

/** Waits until `check` holds, polling, or fails after `deadlineMs` saying what it waited for. */
export const until = async (what: string, check: () => boolean, deadlineMs = 20_000): Promise<void> => {
  const deadline = Date.now() + deadlineMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}
