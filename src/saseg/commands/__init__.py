"""Commands over folders: each reads its run, eval, plan, quality or audit folders through
`saseg.layout`, hands their tables to the `saseg.analysis` functions, and writes what they
return. This layer sits above `saseg.analysis` (which takes tables, never folders) and below
the CLI, the demo and the report, which call these commands.

One module per command family: `plan` (``saseg plan``, frame and segment units), `quality`
(``saseg quality fit/apply``), `audit` (``saseg audit sample/estimate``), `shift` (the pilot
against the pool) and `selection` (``saseg select``).
"""
