import * as fs from "node:fs"
import * as net from "node:net"
import { describe, expect, it } from "vitest"
import { freePort } from "../../src/node/FreePort.js"

const listen = (port: number) =>
  new Promise<net.Server>((resolve, reject) => {
    const server = net.createServer()
    server.once("error", reject)
    server.listen(port, "127.0.0.1", () => resolve(server))
  })

describe("freePort", () => {
  it("hands out distinct ports below the kernel's ephemeral range, each free to listen on", async () => {
    const range = fs.existsSync("/proc/sys/net/ipv4/ip_local_port_range")
      ? Number(fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/)[0])
      : 32768
    const ports: Array<number> = []
    for (let i = 0; i < 200; i++) ports.push(await freePort())
    expect(new Set(ports).size).toBe(ports.length)
    if (range - 10_000 >= 1000) for (const port of ports) expect(port).toBeLessThan(range)
    const servers = await Promise.all(ports.slice(0, 20).map(listen))
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))))
  })
})
