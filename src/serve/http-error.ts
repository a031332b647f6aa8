/** An HTTP error answer: status, one line that names the field or value, and extra headers (Retry-After). */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly field?: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = 'HttpError';
  }
}

/** The JSON body of every error, in the OpenAI shape (`error.message`, `error.type`, `error.param`) clients parse. */
export function errorBody(
  status: number,
  message: string,
  field?: string,
): { error: { message: string; type: string; param: string | null } } {
  const type =
    status === 429
      ? 'rate_limit_error'
      : status === 401
        ? 'authentication_error'
        : status >= 500
          ? 'server_error'
          : 'invalid_request_error';
  return { error: { message, type, param: field ?? null } };
}
