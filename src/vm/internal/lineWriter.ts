/**
 * Lines written off the event loop (libuv's threads), one write at a time, in order: for logs that
 * may sit on a stalled disk (the fencing watchdog's own log in the data directory, a VM's log in its
 * state directory), where one synchronous write, hung, would stop the whole JavaScript thread — and
 * with it the fencing that must outlive the stall.
 */
import * as fs from "node:fs"

/** Where a line goes: an open descriptor, or a file appended to (opened for each batch, never through a symbolic link). */
export type LineTarget = number | string

export interface LineWriter {
  /** Queues one line (without its newline) for `target`; returns at once. */
  readonly line: (target: LineTarget, text: string) => void
  /** Calls back once every queued line is written (or failed). */
  readonly drained: (done: () => void) => void
}

const appendFlags = fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW

/** Writes all of `buffer` to `fd` (retrying a full non-blocking pipe), then calls back. */
const writeAll = (fd: number, buffer: Buffer, done: () => void): void =>
  fs.write(fd, buffer, 0, buffer.length, null, (error, written) => {
    if (error?.code === "EAGAIN") return void setTimeout(() => writeAll(fd, buffer, done), 10)
    if (error === null && written < buffer.length) return writeAll(fd, buffer.subarray(written), done)
    done()
  })

/**
 * One writer serves every target, so that a stalled disk holds at most one of libuv's threads (not
 * one per file). Lines that arrive while a write hangs wait; beyond `maxPending` the oldest are
 * dropped, and the next write says how many. A line that cannot be written (an error) is dropped:
 * the log is for people, and there is nowhere else to say so.
 */
export const lineWriter = (maxPending = 1000): LineWriter => {
  const pending: Array<{ readonly target: LineTarget; readonly text: string }> = []
  const waiting: Array<() => void> = []
  let writing = false
  let dropped = 0
  const next = (): void => {
    if (writing) return
    if (pending.length === 0) {
      for (const done of waiting.splice(0)) done()
      return
    }
    writing = true
    // The lines queued for the first target, up to the first line for another: order is kept.
    const target = pending[0]!.target
    let count = 0
    while (count < pending.length && pending[count]!.target === target) count++
    const note = dropped > 0 ? `(${dropped} log lines dropped here: the log file took no writes meanwhile)\n` : ""
    dropped = 0
    const buffer = Buffer.from(note + pending.splice(0, count).map((l) => l.text).join(""))
    const finish = () => {
      writing = false
      next()
    }
    if (typeof target === "number") return writeAll(target, buffer, finish)
    fs.open(target, appendFlags, 0o644, (error, fd) => {
      if (error !== null) return finish()
      writeAll(fd, buffer, () => fs.close(fd, finish))
    })
  }
  return {
    line: (target, text) => {
      if (pending.length >= maxPending) {
        pending.shift()
        dropped++
      }
      pending.push({ target, text: `${text}\n` })
      next()
    },
    drained: (done) => {
      if (!writing && pending.length === 0) return done()
      waiting.push(done)
    }
  }
}
