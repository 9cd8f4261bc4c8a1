/**
 * JSON Schema values (2020-12, the dialect of OpenAPI 3.1) that also carry the TypeScript type of what they
 * describe: a row is declared once, here-shaped, and both its type (`Infer<typeof X>`) and its documented
 * schema come from that one declaration. The gateway's OpenAPI document, the response-conformance test and
 * the generated client all read these values.
 *
 * Pure and plain data (JSON-serialisable): an action's declared responses travel to remote gateways in
 * Moleculer's INFO packets with the rest of its definition.
 *
 * A schema with a `title` is a named component: the document lists it once under components.schemas and
 * every operation that answers it refers to it.
 */
import { MAX_LIMIT } from "./listing";

/** Any JSON Schema object. */
export type JsonSchema = { [keyword: string]: unknown };

declare const DESCRIBES: unique symbol;
/** A JSON Schema describing values of type T (the type exists for the compiler only). */
export type Schema<T> = JsonSchema & { readonly [DESCRIBES]?: T };
export type Infer<S> = S extends Schema<infer T> ? T : never;

type Doc = { description?: string; title?: string; examples?: unknown[] };
type Props = Record<string, Schema<unknown>>;
type Simplify<T> = { [K in keyof T]: T[K] } & {};
type ObjectOf<P extends Props, O extends keyof P> = Simplify<
  { [K in Exclude<keyof P, O>]: Infer<P[K]> } & { [K in O]?: Infer<P[K]> }
>;

const clean = (o: Record<string, unknown>): JsonSchema =>
  Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined));

export const s = {
  integer(o: Doc & { minimum?: number; maximum?: number } = {}): Schema<number> {
    return clean({ type: "integer", ...o });
  },
  number(o: Doc & { minimum?: number; maximum?: number } = {}): Schema<number> {
    return clean({ type: "number", ...o });
  },
  string(o: Doc & { minLength?: number; maxLength?: number; pattern?: string; format?: string } = {}): Schema<string> {
    return clean({ type: "string", ...o });
  },
  boolean(o: Doc = {}): Schema<boolean> {
    return clean({ type: "boolean", ...o });
  },
  /** A timestamp: a Date in the service, an ISO 8601 string on the wire (JSON.stringify's choice). */
  dateTime(o: Doc = {}): Schema<Date> {
    return clean({ type: "string", format: "date-time", ...o });
  },
  enum<const V extends readonly string[]>(values: V, o: Doc = {}): Schema<V[number]> {
    return clean({ type: "string", enum: [...values], ...o });
  },
  /** Anything JSON (a free-form value, e.g. the OpenAPI document itself). */
  unknown(o: Doc = {}): Schema<unknown> {
    return clean({ ...o });
  },
  nullable<T>(inner: Schema<T>): Schema<T | null> {
    // A plain typed schema takes "null" into its type; a named (referenced) or enum schema is wrapped.
    if (typeof inner.type === "string" && inner.title === undefined && inner.enum === undefined) {
      return { ...inner, type: [inner.type, "null"] };
    }
    return { anyOf: [inner, { type: "null" }] };
  },
  array<T>(
    items: Schema<T>,
    o: Doc & { minItems?: number; maxItems?: number; uniqueItems?: boolean } = {},
  ): Schema<T[]> {
    return clean({ type: "array", items, ...o });
  },
  /** Every property required unless named in `optional`; no other property allowed (answers are exact). */
  object<P extends Props, O extends keyof P = never>(
    properties: P,
    o: Doc & { optional?: readonly O[] } = {},
  ): Schema<ObjectOf<P, O>> {
    const { optional = [], ...doc } = o;
    const required = Object.keys(properties).filter((k) => !(optional as readonly string[]).includes(k));
    return clean({ type: "object", ...doc, properties, required, additionalProperties: false });
  },
  /** A free-form object (a map of string to values of `values`). */
  record<T>(values: Schema<T>, o: Doc = {}): Schema<Record<string, T>> {
    return clean({ type: "object", additionalProperties: values, ...o });
  },
};

/** The same object schema with more properties (a row plus what its view joins beside it). */
export function extend<A, P extends Props>(
  base: Schema<A>,
  properties: P,
  o: Doc = {},
): Schema<Simplify<A & ObjectOf<P, never>>> {
  const props = { ...(base.properties as Props), ...properties };
  return { ...base, ...clean({ ...o }), properties: props, required: Object.keys(props) } as JsonSchema;
}

/** The list envelope every list action answers (see lib/listing.ts): one page of `item`. */
export function pageOf<T>(item: Schema<T>): Schema<{ items: T[]; total: number; offset: number; limit: number }> {
  const name = typeof item.title === "string" ? `${item.title}Page` : undefined;
  const page: JsonSchema = s.object(
    {
      items: s.array(item),
      total: s.integer({ minimum: 0, description: "Rows matching the filters, all pages together" }),
      offset: s.integer({ minimum: 0 }),
      limit: s.integer({ minimum: 1, maximum: MAX_LIMIT }),
    },
    { title: name, description: name ? `One page of ${String(item.title)} rows` : undefined },
  );
  return page;
}
