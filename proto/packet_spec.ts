// This module is browser compatible.
/**
 * How each packet type maps onto the protobuf wire: field numbers, payload member names and
 * field kinds, shared by the encoder (`codec.ts`) and the decoder (`decode_packet.ts`).
 *
 * @module
 */
import { PacketType, type PacketTypeName } from "./packet.ts";

export const STR = 0;
export const I64 = 1;
export const BYTES = 2;
/** An optional string (a knp extension field): absent when undefined, left out of `create()`. */
export const OPT = 3;
export type Kind = typeof STR | typeof I64 | typeof BYTES | typeof OPT;
export type Fields = Record<string, unknown>;

/**
 * How one packet type maps onto the wire. Payload member `i` is `names[i]`/`kinds[i]`, field
 * number `numbers[i]`; `index[n]` is the member of field number `n`.
 */
export interface Spec {
  readonly type: PacketTypeName;
  readonly typeNumber: number;
  /** Field number of the payload inside `Packet`. */
  readonly field: number;
  /** Name of the oneof member in the proto, used in error messages. */
  readonly key: string;
  /** Property of the TypeScript `Packet` holding the payload; undefined for DRAIN. */
  readonly prop: string | undefined;
  readonly names: readonly string[];
  readonly kinds: readonly Kind[];
  readonly numbers: readonly number[];
  readonly index: readonly (number | undefined)[];
  readonly create: () => Fields;
}

const EMPTY = new Uint8Array(0);

function defineSpec(
  type: PacketTypeName,
  field: number,
  key: string,
  fields: [string, Kind, number?][],
): Spec {
  const names = fields.map(([name]) => name);
  const kinds = fields.map(([, kind]) => kind);
  const numbers = fields.map(([, , n], i) => n ?? i + 1);
  const index: (number | undefined)[] = [];
  numbers.forEach((n, i) => index[n] = i);
  const create = () => {
    const msg: Fields = {};
    for (const [name, kind] of fields) {
      if (kind !== OPT) msg[name] = kind === STR ? "" : kind === I64 ? 0n : EMPTY;
    }
    return msg;
  };
  const prop = type === "DRAIN" ? undefined : key;
  return {
    type,
    typeNumber: PacketType[type],
    field,
    key,
    prop,
    names,
    kinds,
    numbers,
    index,
    create,
  };
}

export const SPECS: readonly Spec[] = [
  defineSpec("DIAL_REQ", 2, "dialRequest", [
    ["protocol", STR],
    ["address", STR],
    ["random", I64],
    // knp extension: W3C trace context, field 15; upstream peers skip it as an unknown field.
    ["traceparent", OPT, 15],
  ]),
  defineSpec("DIAL_RSP", 3, "dialResponse", [["error", STR], ["connectId", I64], ["random", I64]]),
  defineSpec("CLOSE_REQ", 5, "closeRequest", [["connectId", I64]]),
  defineSpec("CLOSE_RSP", 6, "closeResponse", [["error", STR], ["connectId", I64]]),
  defineSpec("DATA", 4, "data", [["connectId", I64], ["error", STR], ["data", BYTES]]),
  defineSpec("DIAL_CLS", 7, "closeDial", [["random", I64]]),
  defineSpec("DRAIN", 8, "drain", []),
  // knp extension, only on streams that negotiated flow control.
  defineSpec("KNP_WINDOW", 15, "knpWindow", [["connectId", I64], ["bytes", I64]]),
];
export const SPEC_BY_TYPE: (Spec | undefined)[] = [];
for (const s of SPECS) SPEC_BY_TYPE[s.typeNumber] = s;
export const SPEC_BY_NAME = new Map(SPECS.map((s) => [s.type as string, s]));
export const SPEC_BY_FIELD: (Spec | undefined)[] = [];
for (const s of SPECS) SPEC_BY_FIELD[s.field] = s;
