/**
 * JSON text for values that are already valid: the state machine's records, the commands the API
 * just decoded, the answers built from them.
 *
 * `toJson(schema)` writes a value of the schema's type as the same JSON that
 * `JSON.stringify(Schema.encodeSync(schema)(value))` writes (the same content; keys may come in
 * another order). For most of our schemas encoding changes nothing but turning class instances into
 * their fields, which is what `JSON.stringify` does with them anyway; for those `toJson` is plain
 * `JSON.stringify`, 6–9× faster than encoding first (~1 µs against ~7–9 µs for a VM record or a
 * command, measured on this project's 2-core machine), and it runs for every write the leader
 * answers, every command it proposes, and every VM in every snapshot. A schema with a real
 * transformation anywhere inside (a date written as a string, a default filled in) is encoded first.
 *
 * It does not validate: a value that breaks its schema's refinements is written as it is. Use it only
 * for values built from validated parts, never for input.
 */
import { Schema, SchemaAST } from "effect"

/**
 * True when encoding a valid value of `ast`'s type yields a value that `JSON.stringify` writes the
 * same as the original: no transformation anywhere except `Schema.Class` turning an instance into its
 * own fields. Conservative: anything not known to be transparent is not.
 */
export const isEncodeTransparent = (ast: SchemaAST.AST, seen: Set<SchemaAST.AST> = new Set()): boolean => {
  if (seen.has(ast)) return true // a recursive schema is transparent if the rest of it is
  seen.add(ast)
  switch (ast._tag) {
    case "Literal":
    case "StringKeyword":
    case "NumberKeyword":
    case "BooleanKeyword":
    case "TemplateLiteral":
    case "Enums":
    case "UnknownKeyword":
    case "AnyKeyword":
    case "UndefinedKeyword":
    case "VoidKeyword":
      return true
    case "Refinement":
      return isEncodeTransparent(ast.from, seen)
    case "Suspend":
      return isEncodeTransparent(ast.f(), seen)
    case "Union":
      return ast.types.every((member) => isEncodeTransparent(member, seen))
    case "TupleType":
      return ast.elements.every((e) => isEncodeTransparent(e.type, seen)) && ast.rest.every((r) => isEncodeTransparent(r.type, seen))
    case "TypeLiteral":
      return (
        ast.propertySignatures.every((p) => typeof p.name === "string" && isEncodeTransparent(p.type, seen)) &&
        ast.indexSignatures.every((s) => isEncodeTransparent(s.type, seen))
      )
    case "Transformation":
      // `Schema.Class`: an instance of the declared class, encoded to its fields (`from`), which are
      // its own enumerable properties — what `JSON.stringify` writes of the instance.
      return (
        ast.transformation._tag === "FinalTransformation" &&
        SchemaAST.isDeclaration(ast.to) &&
        SchemaAST.getSurrogateAnnotation(ast.to)._tag === "Some" &&
        SchemaAST.isTypeLiteral(ast.from) &&
        isEncodeTransparent(ast.from, seen)
      )
    default:
      return false
  }
}

/** A writer of JSON text for valid values of `schema` (see the module comment). */
export const toJson = <A, I>(schema: Schema.Schema<A, I, never>): ((value: A) => string) => {
  if (isEncodeTransparent(schema.ast)) return (value) => JSON.stringify(value)
  const encode = Schema.encodeSync(schema)
  return (value) => JSON.stringify(encode(value))
}
