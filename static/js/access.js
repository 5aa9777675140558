// Short-lived access tokens for the demo and caption pages. A page cannot keep a secret, so it
// never holds the server's API token: it asks the server for a signed token valid a few
// minutes (POST /browser-token, answered for the server's own pages only) before each
// connection. A server without API_TOKENS (or with BROWSER_TOKENS off) answers 404, and the
// page connects without a token.

/** A fresh browser token, or null when the server gives none. */
export async function browserToken() {
  try {
    const response = await fetch(new URL("browser-token", location.href), {
      method: "POST",
      credentials: "same-origin",
      cache: "no-store",
    });
    if (!response.ok) return null;
    const body = await response.json();
    return typeof body.token === "string" ? body.token : null;
  } catch {
    return null;
  }
}

/** `url` with `?token=` added when there is a token (WebSocket and EventSource take no headers). */
export function withToken(url, token) {
  if (token) url.searchParams.set("token", token);
  return url;
}

/** `fetch` of a protected API path with a fresh browser token, when the server gives one. */
export async function fetchWithToken(path) {
  const token = await browserToken();
  return fetch(path, token ? { headers: { Authorization: `Bearer ${token}` } } : {});
}
