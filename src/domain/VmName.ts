import { Schema } from "effect"

/**
 * A VM's name. It becomes a directory (`/var/lib/microvms/NAME`), a systemd instance name
 * (`microvm@NAME`) and a tap-device prefix, so only a lowercase DNS label (RFC 1123) is accepted:
 * 1–63 characters of a–z, 0–9 and '-', starting and ending with a letter or digit.
 */
export const VmName = Schema.String.pipe(
  Schema.minLength(1, { message: () => "a VM name must not be empty" }),
  Schema.maxLength(63, { message: () => "a VM name is at most 63 characters" }),
  Schema.pattern(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, {
    message: () =>
      "a VM name is a lowercase DNS label: a–z, 0–9 and '-', starting and ending with a letter or digit"
  }),
  Schema.brand("VmName")
)
export type VmName = typeof VmName.Type
