/**
 * Throughput of the simulator's hot path: Network.send → EventQueue.push → pop → Network.accept,
 * with a trace record per delivered message.
 *
 *   npx vite-node test/sim/benchNetwork.ts [messages]
 */
import { performance } from "node:perf_hooks"
import { EventQueue } from "../../src/sim/EventQueue.js"
import { type Delivery, defaultLinkFaults, Network } from "../../src/sim/Network.js"
import { Prng } from "../../src/sim/Prng.js"
import { TraceHash } from "../../src/sim/Trace.js"

const [messages = 1_000_000] = process.argv.slice(2).map(Number)
const nodes = [1, 2, 3, 4, 5]

for (let round = 1; round <= 3; round++) {
  const queue = new EventQueue<Delivery<number>>()
  const net = new Network<number>({ nodes, prng: Prng.fromSeed(round).fork("network"), schedule: (t, d) => queue.push(t, d), links: defaultLinkFaults })
  const trace = new TraceHash()
  const t0 = performance.now()
  let now = 0
  for (let i = 0; i < messages; i++) {
    net.send(nodes[i % 5]!, nodes[(i + 1 + (i % 3)) % 5]!, i, now)
    // Keep ~1,000 messages in flight, like a busy 5-node cluster.
    if (queue.size > 1000) {
      const e = queue.pop()!
      now = e.time
      if (net.accept(e.event)) trace.record(e.time, e.event.from, e.event.to, e.event.msg)
    }
  }
  const ms = performance.now() - t0
  console.log(`round ${round}: ${messages} sends, ${net.stats.delivered} delivered+hashed in ${ms.toFixed(0)} ms = ${((messages / ms) * 1000).toFixed(0)} messages/s (trace ${trace.digest()})`)
}
