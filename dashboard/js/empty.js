/* An app without events: how to send some (the Python client's snippet, or curl). */
(function (A) {
  "use strict";

  function snippet(app, base) {
    return [
      "from apinalytics_client import Sender",
      "from apinalytics_client.asgi import ApinalyticsMiddleware",
      "",
      `sender = Sender(${JSON.stringify(app)}, "YOUR_WRITE_KEY", ${JSON.stringify(base.replace(/\/$/, ""))})`,
      "app.add_middleware(ApinalyticsMiddleware, sender=sender)",
    ].join("\n");
  }
  function curl(app, base) {
    return `curl -X POST ${base.replace(/\/$/, "")}/1/events/ \\\n  -H "X-Auth-User: ${app}" -H "X-Auth-Key: YOUR_WRITE_KEY" \\\n` +
      `  -H "Content-Type: application/json" \\\n  -d '[{"timestamp": '$(date +%s)', "method": "GET", "url": "/hello", "function": "hello", "response_us": 1200, "status_code": 200}]'`;
  }

  /* When the range has no calls and no filter: has the app any events at all (within
   * the year the service accepts)? */
  A.appIsEmpty = async function appIsEmpty(cfg, end, signal) {
    const all = await A.query(cfg, end - 400 * 86400, end + 3600, {}, signal);
    return Object.values(all.groups).every((pairs) => pairs.every(([, n]) => n === 0));
  };

  /* The snippets, with this app's ID and the service's URL; never a key. */
  A.showSnippet = (app, base) => {
    A.$("snippet").textContent = snippet(app, base);
    A.$("curl").textContent = curl(app, base);
  };

})(window.Apx = window.Apx || {});
