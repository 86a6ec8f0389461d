// The live page: submit over the API, follow one job and the recent list over SSE.
(function () {
  "use strict";
  const TERMINAL = new Set(["succeeded", "failed", "dead", "cancelled"]);
  const $ = (id) => document.getElementById(id);
  const csrf = document.querySelector("input[name=csrfmiddlewaretoken]").value;
  const kindSelect = $("kind"), params = $("params");
  let current = null, currentSource = null;
  const rows = new Map();

  function demoParams() {
    const body = { seconds: Number($("demo-seconds").value), steps: Number($("demo-steps").value) };
    if ($("demo-fail").value) body.fail = $("demo-fail").value;
    if (body.fail === "transient") body.fail_attempts = 1;
    return body;
  }

  function kindChanged() {
    const option = kindSelect.selectedOptions[0];
    if (!option) return;
    $("kind-description").textContent = option.dataset.description || "";
    const friendly = option.value === "demo.sleep";
    $("demo-sleep-fields").hidden = !friendly;
    params.value = friendly ? JSON.stringify(demoParams(), null, 2) : option.dataset.example;
  }
  kindSelect.addEventListener("change", kindChanged);
  for (const id of ["demo-seconds", "demo-steps", "demo-fail"]) {
    $(id).addEventListener("input", () => { params.value = JSON.stringify(demoParams(), null, 2); });
  }
  kindChanged();

  function showError(text) { const el = $("submit-error"); el.textContent = text; el.hidden = !text; }

  $("submit-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    showError("");
    let parsed;
    try { parsed = params.value.trim() ? JSON.parse(params.value) : {}; }
    catch (e) { showError("Params are not valid JSON: " + e.message); return; }
    $("submit-button").disabled = true;
    try {
      const file = $("file").files[0];
      if (file) {
        const form = new FormData();
        form.append("file", file);
        const uploaded = await fetch("/api/v1/uploads", {
          method: "POST", credentials: "same-origin", headers: { "X-CSRFToken": csrf }, body: form,
        });
        const upload = await uploaded.json();
        if (uploaded.status !== 201) {
          showError("Upload refused: " + (upload.error ? upload.error.message : uploaded.status));
          return;
        }
        parsed.upload = upload.id;
      }
      const response = await fetch("/api/v1/jobs", {
        method: "POST", credentials: "same-origin",
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
        body: JSON.stringify({ kind: kindSelect.value, params: parsed }),
      });
      const body = await response.json();
      if (response.status !== 202) {
        const fields = body.error && body.error.fields ? "\n" + JSON.stringify(body.error.fields, null, 2) : "";
        showError((body.error ? body.error.message : "Submit failed") + fields);
        return;
      }
      follow(body);
    } catch (e) {
      showError("The server could not be reached: " + e.message);
    } finally {
      $("submit-button").disabled = false;
    }
  });

  function follow(job) {
    if (currentSource) currentSource.close();
    current = job.id;
    $("current").hidden = false;
    $("current-id").textContent = job.id;
    $("current-outcome").hidden = true;
    render({ job_id: job.id, kind: job.kind, status: job.status, version: job.version, progress: job.progress });
    const source = new EventSource("/api/v1/jobs/" + job.id + "/events");
    currentSource = source;
    const onEvent = (message) => {
      const event = JSON.parse(message.data);
      render(event);
      if (TERMINAL.has(event.status)) source.close();  // the server ends the stream too
    };
    source.addEventListener("snapshot", onEvent);
    source.addEventListener("job", onEvent);
  }

  function render(event) {
    upsertRow(event);
    if (event.job_id !== current) return;
    const percent = Math.round((event.progress && event.progress.percent) || (event.status === "succeeded" ? 100 : 0));
    $("current-status").textContent = event.status;
    $("current-status").className = "badge " + event.status;
    $("current-bar").style.width = percent + "%";
    $("current-bar").className = "bar " + event.status;
    $("current-percent").textContent = percent;
    $("current-version").textContent = event.version;
    $("current-message").textContent = (event.progress && event.progress.message) || "";
    if (TERMINAL.has(event.status)) {
      $("current-outcome").hidden = false;
      $("current-outcome-title").textContent = event.error ? "Error" : "Result";
      $("current-outcome-body").textContent = JSON.stringify(event.error || event.result || {}, null, 2);
    }
  }

  function upsertRow(event) {
    const tbody = $("recent");
    let row = rows.get(event.job_id);
    if (row && Number(row.dataset.version) > event.version) return;
    if (!row) {
      const empty = tbody.querySelector("tr.empty");
      if (empty) empty.remove();
      row = document.createElement("tr");
      row.dataset.jobId = event.job_id;
      row.innerHTML = '<td><code></code></td><td class="kind"></td><td><span class="badge"></span></td>' +
        '<td><div class="progress mini"><div class="bar"></div></div></td><td class="when"></td>';
      row.querySelector("code").textContent = event.job_id.slice(0, 8);
      row.querySelector(".when").textContent = event.created_at
        ? new Date(event.created_at).toLocaleTimeString() : new Date().toLocaleTimeString();
      tbody.prepend(row);
      rows.set(event.job_id, row);
      while (tbody.rows.length > 15) { rows.delete(tbody.lastElementChild.dataset.jobId); tbody.lastElementChild.remove(); }
    }
    row.dataset.version = event.version;
    row.dataset.status = event.status;
    row.querySelector(".kind").textContent = event.kind;
    const badge = row.querySelector(".badge");
    badge.textContent = event.status; badge.className = "badge " + event.status;
    const percent = (event.progress && event.progress.percent) || (event.status === "succeeded" ? 100 : 0);
    const bar = row.querySelector(".bar");
    bar.style.width = Math.round(percent) + "%"; bar.className = "bar " + event.status;
  }

  async function loadRecent() {
    const response = await fetch("/api/v1/jobs?page_size=15", { credentials: "same-origin" });
    if (!response.ok) return;
    const body = await response.json();
    for (const job of body.results.slice().reverse()) {
      upsertRow({ job_id: job.id, kind: job.kind, status: job.status, version: job.version,
                  progress: job.progress, created_at: job.created_at });
    }
    const all = new EventSource("/api/v1/events");
    const onEvent = (message) => render(JSON.parse(message.data));
    all.addEventListener("snapshot", onEvent);
    all.addEventListener("job", onEvent);
  }
  loadRecent();
})();
