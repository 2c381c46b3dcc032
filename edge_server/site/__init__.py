"""A site larger than one machine: jobs as tasks on a Dask cluster of lent machines.

``edge-server --engine dask --scheduler tcp://HOST:8786`` keeps the edge
server as the front door (ZeroMQ protocol, CURVE/ZAP, admission, the fair
queue, the job store, metering, credits) and runs each job as one task on
the Dask cluster whose workers are machines people lend (``offload lend``)::

    client ──zmq──▶ edge server ──client.submit(run_site_job, spec)──▶ Dask scheduler
                     ▲    site socket (ZeroMQ ROUTER,                      │
                     │    CURVE when the server has a key)                 ▼
                     └──── HELLO / CALL / CHECKPOINT / DONE ──── task on a lender's worker
                                                                   │ socketpair
                                                                   ▼
                                                   job process: edge_server.worker.run_worker
                                                   (per-job limits, restricted loading,
                                                    fingerprint check, own working directory)

* The task carries no payload: only the job's id, a one-time token and the
  site socket's address (:mod:`.engine`). It fetches the call from the edge
  server over ZeroMQ and sends its checkpoints and result back the same way
  (:mod:`.task`): payloads never pass through the Dask scheduler, checkpoints
  reach the client while the task runs, and the edge server's poll loop
  reads them like any other socket.
* On the lender the job runs in a process of its own, the same
  :func:`~edge_server.worker.run_worker` as on an edge server, with the
  server's per-job limits (:mod:`.job`), in a working directory that is
  deleted when the task ends.
* A lender lost mid-job: Dask reschedules the task on another worker; its
  HELLO gets the call and the latest checkpoint the edge server holds, and
  the job resumes there (the worker's RESUME message).
* The apps reach the workers through Dask's ``UploadDirectory`` plugin, in a
  directory named after their digest (:mod:`.apps`); the job process checks
  each call's fingerprint against its copy.
"""
