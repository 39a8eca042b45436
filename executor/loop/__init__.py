"""One agent task's loop: a pure state machine (:mod:`.machine`) that decides every
step, the driver (:mod:`.driver`) that performs its actions, the reply grammar, the
chat format of the token transcript, and the journal that makes it durable."""
