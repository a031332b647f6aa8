/**
 * A mistake in what the user gave us (a file, a field, a value). The CLI prints only the message and
 * exits with `exitCode`; anything else escaping to the top is a bug and keeps its stack trace.
 */
export class LisaError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode = 1) {
    super(message);
    this.name = 'LisaError';
    this.exitCode = exitCode;
  }
}

/** Throws a LisaError unless `cond` holds: for validating untrusted input. */
export function check(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new LisaError(typeof message === 'string' ? message : message());
}
