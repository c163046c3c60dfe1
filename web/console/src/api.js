// The engine's API as the page calls it: the session cookie rides along (same origin),
// unsafe methods carry the session's CSRF token in X-CSRF-Token, and errors come back as
// RFC 9457 problems, thrown as ApiError.

export const CSRF_HEADER = 'X-CSRF-Token';

export class ApiError extends Error {
  constructor(status, problem) {
    const detail = problem?.detail || problem?.title || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.problem = problem ?? null;
  }

  /** The problem's type name (its URL's last part), e.g. `lending-off`. */
  get kind() {
    const type = this.problem?.type ?? '';
    return type.slice(type.lastIndexOf('/') + 1);
  }
}

export function createApi({ onUnauthorized } = {}) {
  let csrf = null;

  async function request(method, path, body) {
    const headers = { Accept: 'application/json, application/problem+json' };
    if (method !== 'GET' && method !== 'HEAD' && csrf) headers[CSRF_HEADER] = csrf;
    const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let doc = null;
    if (text) {
      try {
        doc = JSON.parse(text);
      } catch {
        doc = { detail: text.slice(0, 200) };
      }
    }
    if (!response.ok) {
      if (response.status === 401 && path !== '/v1/session' && onUnauthorized) onUnauthorized();
      throw new ApiError(response.status, doc);
    }
    return doc;
  }

  return {
    get: (path) => request('GET', path),
    post: (path, body) => request('POST', path, body),
    put: (path, body) => request('PUT', path, body),
    del: (path) => request('DELETE', path),
    setCsrf(token) {
      csrf = token || null;
    },
    /** Every item of a paged list, following `next` up to `maxPages`. */
    async all(path, maxPages = 50) {
      const items = [];
      let cursor = null;
      for (let page = 0; page < maxPages; page += 1) {
        const sep = path.includes('?') ? '&' : '?';
        const doc = await request('GET', cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path);
        items.push(...(doc.items ?? []));
        cursor = doc.next;
        if (!cursor) break;
      }
      return items;
    },
  };
}

/** A path segment, escaped. */
export const seg = (value) => encodeURIComponent(value);
