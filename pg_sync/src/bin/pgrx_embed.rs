pgrx::pgrx_embed!();
