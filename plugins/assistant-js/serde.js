// Tool arguments and model replies read as the Rust assistant reads them (serde_json into
// `#[serde(deny_unknown_fields)]` structs), with serde_json's error messages, positions included:
// a model that sends bad arguments is told the same words whichever language the shop runs in.
//
// A type is 'string', 'u64' or 'u32' (BigInts), 'any' (any JSON value), `option(type)`,
// `seq(type)` or `struct(name, fields, { deny })`, fields being `[name, type, default?]` in
// declaration order.

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** A deserialization failure, written as serde_json writes it. */
export class SerdeError extends Error {
  constructor(reason, line = 0, column = 0) {
    super(line ? `${reason} at line ${line} column ${column}` : reason);
    this.reason = reason;
    this.line = line;
  }
}

export const seq = (items) => ({ kind: 'seq', items });

/** A field that may be null or absent (Rust's `Option`). */
export const option = (inner) => ({ kind: 'option', inner });

export const struct = (name, fields, { deny = false } = {}) => ({ kind: 'struct', name, fields, deny });

/** A string as Rust's `{:?}` writes it (the escapes ordinary text meets). */
export function debugString(text) {
  let out = '"';
  for (const ch of text) {
    const code = ch.codePointAt(0);
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (code === 0) out += '\\0';
    else if (code < 0x20 || code === 0x7f) out += `\\u{${code.toString(16)}}`;
    else out += ch;
  }
  return `${out}"`;
}

/** A float as serde_json writes it in an error (shortest round trip, always with a point or exponent). */
function floatText(value) {
  if (Object.is(value, -0)) return '-0.0';
  if (!Number.isFinite(value)) return value > 0 ? 'inf' : value < 0 ? '-inf' : 'NaN';
  const magnitude = Math.abs(value);
  if (magnitude >= 1e16 || magnitude < 1e-5) return value.toExponential();
  const text = String(value);
  return Number.isInteger(value) ? `${text}.0` : text;
}

/** Rust's `{:?}`-free `Unexpected` of a parsed scalar, as serde_json words it. */
function unexpected(number) {
  if (number.kind === 'u64' || number.kind === 'i64') return `integer \`${number.value}\``;
  return `floating point \`${floatText(number.value)}\``;
}

function describeExpected(type) {
  if (type === 'string') return 'a string';
  if (type === 'u64' || type === 'u32') return type;
  if (type.kind === 'seq') return 'a sequence';
  return `struct ${type.name}`;
}

function oneOf(names) {
  if (names.length === 0) return 'there are no fields';
  if (names.length === 1) return `expected \`${names[0]}\``;
  if (names.length === 2) return `expected \`${names[0]}\` or \`${names[1]}\``;
  return `expected one of ${names.map((n) => `\`${n}\``).join(', ')}`;
}

const U64_MAX = (1n << 64n) - 1n;

class Deserializer {
  constructor(text) {
    this.bytes = encoder.encode(text);
    this.index = 0;
  }

  peek() {
    return this.index < this.bytes.length ? this.bytes[this.index] : null;
  }

  eat() {
    this.index += 1;
  }

  next() {
    const byte = this.peek();
    if (byte !== null) this.index += 1;
    return byte;
  }

  at(i, reason) {
    const slice = this.bytes.subarray(0, i);
    const newline = slice.lastIndexOf(10);
    const start = newline + 1;
    let line = 1;
    for (let j = 0; j < start; j++) if (slice[j] === 10) line += 1;
    return new SerdeError(reason, line, i - start);
  }

  /** An error at the current position (serde_json's `error`). */
  error(reason) {
    return this.at(this.index, reason);
  }

  /** An error at the next byte (serde_json's `peek_error`). */
  peekError(reason) {
    return this.at(Math.min(this.bytes.length, this.index + 1), reason);
  }

  /** A custom error (a visitor's) gets the current position, as serde_json's `fix_position`. */
  fix(error) {
    if (error instanceof SerdeError && error.line === 0) return this.error(error.reason);
    return error;
  }

  whitespace() {
    for (;;) {
      const byte = this.peek();
      if (byte === 0x20 || byte === 0x0a || byte === 0x09 || byte === 0x0d) this.eat();
      else return byte;
    }
  }

  ident(rest) {
    for (const expected of rest) {
      const byte = this.next();
      if (byte === null) throw this.error('EOF while parsing a value');
      if (byte !== expected.charCodeAt(0)) throw this.error('expected ident');
    }
  }

  /** After a `-` (eaten) or at a digit: `{ kind: 'u64' | 'i64' | 'f64', value }`. */
  number(positive) {
    const start = this.index;
    const first = this.next();
    if (first === null) throw this.error('EOF while parsing a value');
    let significand = 0n;
    let float = false;
    if (first === 0x30) {
      const after = this.peek();
      if (after !== null && after >= 0x30 && after <= 0x39) throw this.peekError('invalid number');
    } else if (first >= 0x31 && first <= 0x39) {
      significand = BigInt(first - 0x30);
      for (;;) {
        const byte = this.peek();
        if (byte === null || byte < 0x30 || byte > 0x39) break;
        this.eat();
        significand = significand * 10n + BigInt(byte - 0x30);
        if (significand > U64_MAX) float = true;
      }
    } else {
      throw this.error('invalid number');
    }
    if (this.peek() === 0x2e) {
      float = true;
      this.eat();
      let digits = 0;
      for (let byte = this.peek(); byte !== null && byte >= 0x30 && byte <= 0x39; byte = this.peek()) {
        this.eat();
        digits += 1;
      }
      if (digits === 0) {
        throw this.peek() === null ? this.peekError('EOF while parsing a value') : this.peekError('invalid number');
      }
    }
    if (this.peek() === 0x65 || this.peek() === 0x45) {
      float = true;
      this.eat();
      if (this.peek() === 0x2b || this.peek() === 0x2d) this.eat();
      const digit = this.next();
      if (digit === null) throw this.error('EOF while parsing a value');
      if (digit < 0x30 || digit > 0x39) throw this.error('invalid number');
      for (let byte = this.peek(); byte !== null && byte >= 0x30 && byte <= 0x39; byte = this.peek()) this.eat();
    }
    const text = decoder.decode(this.bytes.subarray(start, this.index));
    if (float) {
      const value = Number(text);
      // serde_json's `ignore_value` checks the syntax of a number, not its range.
      if (!Number.isFinite(value) && !this.ignoring) throw this.error('number out of range');
      return { kind: 'f64', value: positive ? value : -value };
    }
    if (positive) return { kind: 'u64', value: significand };
    if (significand === 0n || significand > 1n << 63n) return { kind: 'f64', value: -Number(significand) };
    return { kind: 'i64', value: -significand };
  }

  hex() {
    if (this.index + 4 > this.bytes.length) {
      this.index = this.bytes.length;
      throw this.error('EOF while parsing a string');
    }
    const digits = decoder.decode(this.bytes.subarray(this.index, this.index + 4));
    this.index += 4;
    if (!/^[0-9a-fA-F]{4}$/.test(digits)) throw this.error('invalid escape');
    return Number.parseInt(digits, 16);
  }

  /** After the opening quote (eaten): the string's text. */
  string() {
    let out = '';
    let start = this.index;
    for (;;) {
      const byte = this.peek();
      if (byte === null) throw this.error('EOF while parsing a string');
      if (byte === 0x22) {
        out += decoder.decode(this.bytes.subarray(start, this.index));
        this.eat();
        return out;
      }
      if (byte === 0x5c) {
        out += decoder.decode(this.bytes.subarray(start, this.index));
        this.eat();
        out += this.escape();
        start = this.index;
      } else if (byte < 0x20) {
        this.eat();
        throw this.error('control character (\\u0000-\\u001F) found while parsing a string');
      } else {
        this.eat();
      }
    }
  }

  escape() {
    const byte = this.next();
    if (byte === null) throw this.error('EOF while parsing a string');
    const simple = { 0x22: '"', 0x5c: '\\', 0x2f: '/', 0x62: '\b', 0x66: '\f', 0x6e: '\n', 0x72: '\r', 0x74: '\t' };
    if (simple[byte] !== undefined) return simple[byte];
    if (byte !== 0x75) throw this.error('invalid escape');
    const n = this.hex();
    if (n >= 0xdc00 && n <= 0xdfff) throw this.error('lone leading surrogate in hex escape');
    if (n < 0xd800 || n > 0xdbff) return String.fromCharCode(n);
    if (this.peek() === null) throw this.error('EOF while parsing a string');
    if (this.peek() !== 0x5c) {
      this.eat();
      throw this.error('unexpected end of hex escape');
    }
    this.eat();
    if (this.peek() === null) throw this.error('EOF while parsing a string');
    if (this.peek() !== 0x75) {
      this.eat();
      throw this.error('unexpected end of hex escape');
    }
    this.eat();
    const low = this.hex();
    if (low < 0xdc00 || low > 0xdfff) throw this.error('lone leading surrogate in hex escape');
    return String.fromCharCode(n, low);
  }

  /** A scalar in the wrong place: parsed (as serde_json does), then refused. */
  invalidType(expected) {
    const byte = this.peek();
    let what;
    if (byte === 0x6e) {
      this.eat();
      this.ident('ull');
      what = 'null';
    } else if (byte === 0x74) {
      this.eat();
      this.ident('rue');
      what = 'boolean `true`';
    } else if (byte === 0x66) {
      this.eat();
      this.ident('alse');
      what = 'boolean `false`';
    } else if (byte === 0x2d) {
      this.eat();
      what = unexpected(this.number(false));
    } else if (byte !== null && byte >= 0x30 && byte <= 0x39) {
      what = unexpected(this.number(true));
    } else if (byte === 0x22) {
      this.eat();
      what = `string ${debugString(this.string())}`;
    } else if (byte === 0x5b) {
      what = 'sequence';
    } else if (byte === 0x7b) {
      what = 'map';
    } else {
      return this.peekError('expected value');
    }
    return this.fix(new SerdeError(`invalid type: ${what}, expected ${expected}`));
  }

  value(type) {
    const byte = this.whitespace();
    if (byte === null) throw this.peekError('EOF while parsing a value');
    if (type === 'any') return this.any(byte);
    if (type === 'string') {
      if (byte !== 0x22) throw this.invalidType('a string');
      this.eat();
      return this.string();
    }
    if (type.kind === 'option') {
      if (byte !== 0x6e) return this.value(type.inner);
      this.eat();
      this.ident('ull');
      return null;
    }
    if (type === 'u64' || type === 'u32') {
      if (byte !== 0x2d && (byte < 0x30 || byte > 0x39)) throw this.invalidType(type);
      if (byte === 0x2d) this.eat();
      const number = this.number(byte !== 0x2d);
      const max = type === 'u64' ? U64_MAX : 0xffffffffn;
      if (number.kind === 'u64' && number.value <= max) return number.value;
      const reason =
        number.kind === 'f64'
          ? `invalid type: ${unexpected(number)}, expected ${type}`
          : `invalid value: integer \`${number.value}\`, expected ${type}`;
      throw this.fix(new SerdeError(reason));
    }
    if (type.kind === 'seq') {
      if (byte !== 0x5b) throw this.invalidType('a sequence');
      this.eat();
      return this.close(() => this.elements((element) => element(type.items)), 'seq');
    }
    if (byte === 0x5b) {
      this.eat();
      return this.close(() => this.structFromSeq(type), 'seq');
    }
    if (byte !== 0x7b) throw this.invalidType(describeExpected(type));
    this.eat();
    return this.close(() => this.structFromMap(type), 'map');
  }

  /** Runs a visitor over a list or map whose opening byte was eaten, then its end, as serde_json's `(ret, end)`. */
  close(visit, kind) {
    let result;
    let failure;
    try {
      result = visit();
    } catch (error) {
      failure = error;
    }
    let endFailure;
    try {
      if (kind === 'seq') this.endSeq();
      else this.endMap();
    } catch (error) {
      endFailure = error;
    }
    if (failure ?? endFailure) throw this.fix(failure ?? endFailure);
    return result;
  }

  endSeq() {
    const byte = this.whitespace();
    if (byte === 0x5d) return this.eat();
    if (byte === 0x2c) {
      this.eat();
      throw this.whitespace() === 0x5d ? this.peekError('trailing comma') : this.peekError('trailing characters');
    }
    if (byte === null) throw this.peekError('EOF while parsing a list');
    throw this.peekError('trailing characters');
  }

  endMap() {
    const byte = this.whitespace();
    if (byte === 0x7d) return this.eat();
    if (byte === 0x2c) throw this.peekError('trailing comma');
    if (byte === null) throw this.peekError('EOF while parsing an object');
    throw this.peekError('trailing characters');
  }

  /** Each element of a list (after `[`), through `each(read)`; returns the values. */
  elements(each) {
    const values = [];
    let first = true;
    for (;;) {
      const byte = this.whitespace();
      if (byte === null) throw this.peekError('EOF while parsing a list');
      if (byte === 0x5d) return values;
      if (!first) {
        if (byte !== 0x2c) throw this.peekError('expected `,` or `]`');
        this.eat();
        const after = this.whitespace();
        if (after === 0x5d) throw this.peekError('trailing comma');
        if (after === null) throw this.peekError('EOF while parsing a value');
      }
      first = false;
      const value = each((type) => this.value(type));
      if (value === undefined) return values;
      values.push(value);
    }
  }

  /** The next key of a map (after `{`), or null at its end. */
  key(first) {
    const byte = this.whitespace();
    if (byte === null) throw this.peekError('EOF while parsing an object');
    if (byte === 0x7d) return null;
    if (first) {
      if (byte !== 0x22) throw this.peekError('key must be a string');
    } else {
      if (byte !== 0x2c) throw this.peekError('expected `,` or `}`');
      this.eat();
      const after = this.whitespace();
      if (after === 0x7d) throw this.peekError('trailing comma');
      if (after === null) throw this.peekError('EOF while parsing a value');
      if (after !== 0x22) throw this.peekError('key must be a string');
    }
    this.eat();
    return this.string();
  }

  colon() {
    const byte = this.whitespace();
    if (byte === 0x3a) return this.eat();
    throw byte === null ? this.peekError('EOF while parsing an object') : this.peekError('expected `:`');
  }

  structFromMap(type) {
    const names = type.fields.map(([name]) => name);
    const values = new Map();
    for (let first = true; ; first = false) {
      const key = this.key(first);
      if (key === null) break;
      if (!names.includes(key)) {
        if (type.deny) throw new SerdeError(`unknown field \`${key}\`, ${oneOf(names)}`);
        this.colon();
        this.ignore();
        continue;
      }
      if (values.has(key)) throw new SerdeError(`duplicate field \`${key}\``);
      this.colon();
      values.set(key, this.value(type.fields.find(([name]) => name === key)[1]));
    }
    const out = {};
    for (const [name, fieldType, fallback] of type.fields) {
      if (values.has(name)) out[name] = values.get(name);
      else if (fallback !== undefined) out[name] = fallback();
      else if (fieldType.kind === 'option') out[name] = null;
      else throw new SerdeError(`missing field \`${name}\``);
    }
    return out;
  }

  structFromSeq(type) {
    const out = {};
    const count = type.fields.length;
    let index = 0;
    let first = true;
    for (const [name, fieldType, fallback] of type.fields) {
      const byte = this.whitespace();
      if (byte === null) throw this.peekError('EOF while parsing a list');
      let present = byte !== 0x5d;
      if (present && !first) {
        if (byte !== 0x2c) throw this.peekError('expected `,` or `]`');
        this.eat();
        const after = this.whitespace();
        if (after === 0x5d) throw this.peekError('trailing comma');
        if (after === null) throw this.peekError('EOF while parsing a value');
      }
      if (present) {
        first = false;
        out[name] = this.value(fieldType);
      } else if (fallback !== undefined) {
        out[name] = fallback();
      } else {
        const s = count === 1 ? '' : 's';
        throw new SerdeError(`invalid length ${index}, expected struct ${type.name} with ${count} element${s}`);
      }
      index += 1;
      present = false;
    }
    return out;
  }

  /** Skips a value of a field nobody reads, as serde_json's `ignore_value` (its own errors). */
  ignore() {
    const byte = this.whitespace();
    if (byte === null) throw this.peekError('EOF while parsing a value');
    if (byte === 0x22) {
      this.eat();
      return this.ignoreString();
    }
    if (byte === 0x5b) {
      this.eat();
      if (this.whitespace() === 0x5d) return this.eat();
      for (;;) {
        this.ignore();
        const next = this.whitespace();
        if (next === 0x2c) this.eat();
        else if (next === 0x5d) return this.eat();
        else if (next === null) throw this.peekError('EOF while parsing a list');
        else throw this.peekError('expected `,` or `]`');
      }
    }
    if (byte === 0x7b) {
      this.eat();
      if (this.whitespace() === 0x7d) return this.eat();
      for (;;) {
        const quote = this.whitespace();
        if (quote === null) throw this.peekError('EOF while parsing an object');
        if (quote !== 0x22) throw this.peekError('key must be a string');
        this.eat();
        this.ignoreString();
        this.colon();
        this.ignore();
        const next = this.whitespace();
        if (next === 0x2c) this.eat();
        else if (next === 0x7d) return this.eat();
        else if (next === null) throw this.peekError('EOF while parsing an object');
        else throw this.peekError('expected `,` or `}`');
      }
    }
    this.ignoring = true;
    try {
      this.any(byte);
    } finally {
      this.ignoring = false;
    }
  }

  ignoreString() {
    for (;;) {
      const byte = this.peek();
      if (byte === null) throw this.error('EOF while parsing a string');
      if (byte === 0x22) return this.eat();
      if (byte < 0x20) throw this.error('control character (\\u0000-\\u001F) found while parsing a string');
      this.eat();
      if (byte === 0x5c) {
        const escape = this.next();
        if (escape === null) throw this.error('EOF while parsing a string');
        if (escape === 0x75) this.hex();
        else if (!'"\\/bfnrt'.includes(String.fromCharCode(escape))) throw this.error('invalid escape');
      }
    }
  }

  any(byte) {
    if (byte === 0x6e) {
      this.eat();
      this.ident('ull');
      return null;
    }
    if (byte === 0x74) {
      this.eat();
      this.ident('rue');
      return true;
    }
    if (byte === 0x66) {
      this.eat();
      this.ident('alse');
      return false;
    }
    if (byte === 0x2d || (byte >= 0x30 && byte <= 0x39)) {
      if (byte === 0x2d) this.eat();
      const number = this.number(byte !== 0x2d);
      return typeof number.value === 'bigint' ? Number(number.value) : number.value;
    }
    if (byte === 0x22) {
      this.eat();
      return this.string();
    }
    if (byte === 0x5b) {
      this.eat();
      return this.close(() => this.elements((element) => element('any')), 'seq');
    }
    if (byte === 0x7b) {
      this.eat();
      return this.close(() => {
        const object = {};
        for (let first = true; ; first = false) {
          const key = this.key(first);
          if (key === null) return object;
          this.colon();
          object[key] = this.value('any');
        }
      }, 'map');
    }
    throw this.peekError('expected value');
  }
}

/** `text` read as `type`, or a `SerdeError` thrown with serde_json's message. */
export function fromStr(text, type) {
  const de = new Deserializer(text);
  const value = de.value(type);
  if (de.whitespace() !== null) throw de.peekError('trailing characters');
  return value;
}
