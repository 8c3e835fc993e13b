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

const isLabelKey = Schema.is(LabelKey)

/**
 * Labels on a VM or a node. Keys are checked by a filter rather than as the record's key schema, so
 * that a bad key is reported as a bad label key (naming it) instead of being dropped or called
 * "unexpected".
 */
export const Labels = Schema.Record({ key: Schema.String, value: LabelValue }).pipe(
  Schema.filter((labels) => {
    const keys = Object.keys(labels)
    if (keys.length > 64) return "at most 64 labels"
    const bad = keys.find((key) => !isLabelKey(key))
    return (
      bad === undefined ||
      `label key ${JSON.stringify(bad)} is not valid: letters, digits, '.', '_', '-' (optionally prefixed by 'domain/'), at most 128 characters`
    )
  })
)
export type Labels = typeof Labels.Type

/** Parses the CLI's `k=v` form. */
export const parseLabelPair = (text: string): readonly [string, string] | undefined => {
  const at = text.indexOf("=")
  return at <= 0 ? undefined : [text.slice(0, at), text.slice(at + 1)]
}
