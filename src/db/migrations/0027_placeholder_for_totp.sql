-- Placeholder for the TOTP branch's 0027 (local tests only; never committed).
select 1;
