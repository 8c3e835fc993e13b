import { Schema } from "effect"

/** Label keys follow the Kubernetes shape: an optional DNS prefix and a name, e.g. `zone`, `blixard.io/gpu`. */
export const LabelKey = Schema.String.pipe(
  Schema.minLength(1, { message: () => "a label key must not be empty" }),
  Schema.maxLength(128, { message: () => "a label key is at most 128 characters" }),
  Schema.pattern(/^([a-z0-9]([a-z0-9.-]*[a-z0-9])?\/)?[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?$/, {
    message: () => "a label key is letters, digits, '.', '_', '-' (optionally prefixed by 'domain/')"
  })
)
export type LabelKey = typeof LabelKey.Type

export const LabelValue = Schema.String.pipe(
  Schema.maxLength(63, { message: () => "a label value is at most 63 characters" }),
  Schema.pattern(/^([A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?)?$/, {
    message: () => "a label value is letters, digits, '.', '_', '-', starting and ending with a letter or digit"
  })
)
export type LabelValue = typeof LabelValue.Type

export const Labels = Schema.Record({ key: LabelKey, value: LabelValue })
export type Labels = typeof Labels.Type

/** Parses the CLI's `k=v` form. */
export const parseLabelPair = (text: string): readonly [string, string] | undefined => {
  const at = text.indexOf("=")
  return at <= 0 ? undefined : [text.slice(0, at), text.slice(at + 1)]
}
