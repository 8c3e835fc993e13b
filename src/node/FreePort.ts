import * as fs from "node:fs"
import * as net from "node:net"

/** The lowest port the kernel hands to outgoing connections (Linux's default range starts at 32768). */
const ephemeralLow = ((): number => {
  try {
    const low = Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0])
    return Number.isInteger(low) && low > 0 ? low : 32768
  } catch {
    return 32768
  }
})()

const lowest = 10_000
const handedOut = new Set<number>()

const listenable = (port: number): Promise<number | undefined> =>
  new Promise((resolve) => {
    const server = net.createServer()
    server.once("error", () => resolve(undefined))
    server.listen(port, "127.0.0.1", () => {
      const address = server.address()
      const bound = typeof address === "object" && address !== null ? address.port : undefined
      server.close(() => resolve(bound))
    })
  })

/**
 * A loopback port nobody listens on right now, for the nodes the demo, a test or a benchmark starts.
 * Picked at random below the kernel's ephemeral range, where outgoing connections take their source
 * ports (a node restarted on its port could otherwise find it taken by some connection's source),
 * checked by listening on it, and never handed out twice by this process (two nodes of one cluster
 * must not get the same port). Falls back to a port the kernel picks when that range is too small.
 */
export const freePort = async (): Promise<number> => {
  const high = ephemeralLow
  for (let attempt = 0; high - lowest >= 1000 && attempt < 100; attempt++) {
    const port = lowest + Math.floor(Math.random() * (high - lowest))
    if (handedOut.has(port)) continue
    if ((await listenable(port)) === undefined) continue
    handedOut.add(port)
    return port
  }
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = await listenable(0)
    if (port === undefined) break
    if (handedOut.has(port)) continue
    handedOut.add(port)
    return port
  }
  throw new Error("no free loopback port found")
}
