"""Executing a plan: the engine. It never imports the runtime or the service.

Where things are:

- ``config.py``    ``Config``: everything the runtime hands down, once (clock, codec, limits,
  bus, middleware, dependencies, the fast-path switch, child-plan lookup, observers).
- ``plan.py``      ``compile_plan``: a blueprint resolved against a registry, with the routes
  and flags the shortcuts use precomputed.
- ``load.py``      envelopes against plans: a new run's envelope, decoding and checking a
  stored one, typed state, migration, parsing resume data.
- ``execution.py`` ``Execution``, the loop (``_loop``: run what is ready, spawn a task per
  branch that can suspend, checkpoint) — calling nodes, routing, pausing, sealing — and
  ``execute``/``finish``, which drive one call to its result.
- ``calls.py``     the call of one node function through middleware and under a timeout.
- ``line.py``      the straight line, a shortcut (see below).
- ``resume.py``    every resume: parse, select targets, ``admit``, apply; batch items and
  subflow paths; ``quick_resume``.
- ``tasks.py``     the task group the loop spawns branches into.
- ``segment.py``   ``observed``: a call wrapped in the ``around_segment`` hooks, with its
  ``Segment``; used only when a middleware has such a hook (it keeps every shortcut).

Glossary (the engine's own words):

- **plan / plan node / plan edge**: the compiled blueprint the engine runs.
- **envelope**: the run's whole state (``_envelope.records.Envelope``); ``Execution`` works on
  one decoded envelope and seals it at the end of a call.
- **ready item**: ``(node_id, input, gate_open)`` waiting in ``Execution.ready`` to run.
- **wave**: the ready items of one moment; ``testing.create_stepper`` runs one wave per step.
- **frontier**: what is ready or in flight; a checkpoint or a ``RunControl`` pause stores it as
  ``control`` waits so ``resume`` continues it.
- **waiting record** (``WaitState``): one pause; ``kind`` is ``wait``/``timer`` (built-ins),
  ``gate`` (``pause_before``), ``node`` (``node.pause()``), ``control`` (``RunControl``),
  ``subflow``/``batch`` (waits of a child, listed by path ``"node/child"``).
- **gate**: ``pause_before``; a gate record resumes by running the node it held back.
- **token**: what one edge delivers to its target: fired (with a value) or dead.
- **activation**: the k-th token of every incoming edge of a join makes its k-th run.
- **join buffer**: tokens waiting at a join for the rest of its activation (``env.joins``).
- **dead path**: an edge that can no longer fire (its source was skipped or routed elsewhere);
  a node all of whose forward edges are dead is **skipped**, and the death propagates.
- **back edge**: an edge closing a cycle (``_flow.graph.back_edges``); it never counts toward a
  join.
- **outcome**: how one node's attempts ended: ok (output, action), paused, or failed.
- **segment**: the work of one ``run``/``resume``/``fire`` call, from one stored state to the next.

Shortcuts (``Config.fast``; ``FLOWCRAFT_FAST_PATHS=0`` turns them all off, and the test suite
runs both ways). Each one skips work its general twin would find empty:

- **plain** node: a task with no class, inputs mapping, gate, retries or timeout. The **hot
  path** in ``Execution._step`` calls it directly; twin: ``Execution._attempts``.
- **inline** node: cannot suspend (built-ins, ``async def`` without awaits); run in the loop
  without a task, in a copy of the context variables; twin: ``Execution._spawn``.
- **line**: ``line.run_line``/``resume_line`` run plain nodes one after another with no
  ``Execution`` and hand over at the first thing they do not do; twin: ``execute(begin(...))``
  and ``resume._apply``.
- **quick** resume: ``resume.quick_resume``, a one-wait approval proved valid by a few lookups;
  twin: ``resume.resume``.
- **routes / direct**: per-action targets precomputed when no edge has a condition, transform,
  back edge or join; twin: ``Execution._route``.
"""
