// The way in. The launch page sharp-watch opened sent the browser here with a one-time key
// in the address's fragment (a browser never sends the fragment to any server). Take it
// out of the address and the history, trade it for this tab's session token, and go on
// to the page it names.
"use strict";

async function signIn() {
  const given = new URLSearchParams(location.hash.slice(1));
  history.replaceState(null, "", "/open");
  const next = given.get("next") || "/";
  const page = next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\")
    ? next : "/";
  const response = await fetch("/api/session", {
    method: "POST", credentials: "omit", cache: "no-store",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ key: given.get("key") || "" }),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  sessionStorage.setItem(TOKEN_KEY, data.token);
  location.replace(page);
}

signIn().catch((error) => {
  const status = document.getElementById("status");
  status.className = "note bad";
  status.textContent = `Cannot sign in: ${error.message || error}`;
});
