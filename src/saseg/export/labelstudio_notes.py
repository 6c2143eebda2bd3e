"""The Label Studio export's IMPORT.md: every step on a fresh, headless machine.

Paths in it are relative to the export folder, so the notes stay true when the folder moves.
"""

from __future__ import annotations


def import_notes(root: str, storage: str | None, url_prefix: str | None, n: int) -> str:
    """IMPORT.md: every step on a fresh, headless machine; paths relative to the export folder."""
    head = (f"# Label Studio import ({n} frames, most surprising first)\n\n"
            "Paths here are relative to this folder: run the commands from it (`cd` here). "
            "The folder can be moved or copied to another machine as a whole.\n\n")
    order = ("Keep the priority order: in the Data Manager sort by `rank` ascending (set the "
             "column's type to *Number* from its header menu), then *Label Tasks As Displayed*.")
    if url_prefix:
        return head + (
            f"Images are served from `{url_prefix}` (paths relative to `{root}`).\n\n"
            "1. Create a project; Settings > Labeling Interface > Code: paste "
            "`labelstudio_config.xml`.\n"
            "2. Import `tasks.json`: each task carries the model's prediction as brush masks.\n"
            f"3. {order}\n")
    doc_root = '"$PWD"' if root == "." else f'"$(cd {root} && pwd)"'
    return head + (
        "## 1. Start Label Studio so that it serves this export's images\n\n"
        "On a machine without a screen (a server, over ssh), from this folder:\n\n"
        "```\npip install label-studio            # 1.23 tested\n"
        "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true \\\n"
        f"LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={doc_root} \\\n"
        "LATEST_VERSION_CHECK=false \\\n"
        "label-studio start --no-browser --port 8080 --data-dir ~/label-studio-data \\\n"
        "    --username you@example.com --password '<a password>'\n```\n\n"
        "`--no-browser`: there is no screen to open one on. `--port`: where it listens (open "
        "`http://<machine>:8080` from your own browser, or `ssh -L 8080:localhost:8080 "
        "<machine>`). `--data-dir`: where Label Studio keeps its database and exports (keep it: "
        "the labels live there). `--username`/`--password` create the first user on the first "
        "start (or sign up in the browser). `LATEST_VERSION_CHECK=false`: Label Studio "
        "otherwise looks up a newer version online at start, which stalls without internet. "
        "The document root is the folder the image paths below are relative to"
        + (" (this folder)" if root == "." else f" (`{root}` from here)") + ".\n\n"
        "## 2. Import\n\n"
        "**With the API, in one command.** Sign in, then avatar (top right) > *Account & "
        "Settings* > *Personal Access Token* > **Create New Token**, and copy it (Label Studio "
        "1.23 refuses the legacy token):\n\n"
        "```\npython import_labelstudio.py --url http://localhost:8080 --token <TOKEN>\n```\n\n"
        "It creates the project from `labelstudio_config.xml`, adds a *Local files* source "
        f"storage at `{storage}` (not synced: the tasks come from `tasks.json`), imports "
        "`tasks.json` in queue order, adds a Data Manager tab *Queue order* sorted by `rank` with "
        "the scores typed as numbers (sort and filter them), checks that Label Studio serves the "
        "first image, and writes `labelstudio_tasks.json` (Label Studio's task ids, which name "
        "the files of its PNG export). Your token goes to the `--url` origin only: the script "
        "refuses a redirect to another scheme, host or port, and builds every URL itself (never "
        "from `tasks.json`). It reads the files beside it, wherever the folder is; "
        "`--document-root DIR` names where the images now are when they live outside this "
        "folder and moved (the folder their paths are relative to). If a step fails it deletes the "
        "project it created and prints one line.\n\n"
        "**In the browser:**\n\n"
        "1. Create a project; Settings > Labeling Interface > Code: paste `labelstudio_config.xml`.\n"
        "2. Settings > Cloud Storage > Add Source Storage > *Local files*, absolute local path: "
        f"`{storage}` made absolute (`realpath {storage}`). Add it, but do not sync it. (Label "
        "Studio refuses the document root itself as a storage; this folder is below it.)\n"
        "3. Import `tasks.json`: each task carries the model's prediction as brush masks (edit "
        "them rather than painting from scratch).\n"
        f"4. {order}\n\n"
        "The labelling page shows the frame's rank and risk (or surprise) above the image. The "
        "prediction's score is the model's confidence in its mask (1 - risk), absent without a "
        "quality model.\n\n"
        "## 3. Labels back\n\n"
        "Export the project (Export > *JSON*, or *Brush labels to PNG*), then:\n\n"
        "```\nsaseg labels import --tool labelstudio --export <this folder> --from <export.json "
        "or the PNG zip> --out <labels dir>\n```\n\n"
        "Only labelled tasks come back; skipped ones stay unlabelled. The PNG export names "
        "files by Label Studio task id: the import maps them through `labelstudio_tasks.json` "
        "(or `--tasks <a JSON export>`).\n")
