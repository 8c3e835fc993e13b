import { Schema } from "effect"

export const Vcpus = Schema.Int.pipe(
  Schema.between(1, 1024, { message: () => "vcpus must be a whole number from 1 to 1024" })
)
export const MemoryMiB = Schema.Int.pipe(
  Schema.between(16, 16 * 1024 * 1024, { message: () => "memory is a whole number of MiB from 16 to 16777216" })
)

/** What a node offers, or what a VM asks for. */
export class Resources extends Schema.Class<Resources>("Resources")({
  vcpus: Vcpus,
  memoryMiB: MemoryMiB
}) {}
