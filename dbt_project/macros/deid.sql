{#
  De-identification of the processed layer, DICOM PS3.15 Annex E: Basic Application Level
  Confidentiality Profile with the Retain Longitudinal Temporal Information with Modified
  Dates, Retain Patient Characteristics and Clean Descriptors options. What happens to each
  column is data: the internal_anonymization_rules seed (entity, column, action, ...).

  Pseudonyms are never computed in SQL: the build-warehouse flow computes the keyed
  HMAC-SHA256 pseudonyms in Python (tasks/warehouse/pseudonyms.py, the same code that names the
  preview files) and loads them into internal.deid_pseudonyms (original -> pseudonym,
  2.25 UID, per-patient day offset). So neither the secret nor any key derived from it
  reaches dbt, its logs or its compiled SQL, and DuckDB and Snowflake give identical values.
#}

{% macro deid_rules(entity) -%}
    {%- set columns = ['entity', 'column', 'action', 'processed_name', 'basic_profile_action', 'option_code'] -%}
    {%- set rules = seed_rows('internal_anonymization_rules', entity, columns) -%}
    {%- set types = {} -%}
    {%- for row in seed_rows('internal_column_types', entity, ['entity', 'column', 'type', 'name']) -%}
        {%- do types.update({row['column']: row}) -%}
    {%- endfor -%}
    {%- set out = [] -%}
    {%- for rule in rules -%}
        {%- if rule['action'] not in ('D', 'Z', 'X', 'K', 'C', 'U') -%}
            {{ exceptions.raise_compiler_error("internal_anonymization_rules: action '" ~ rule['action'] ~ "' of " ~ entity ~ "." ~ rule['column'] ~ " is not a PS3.15 Annex E action (D, Z, X, K, C, U)") }}
        {%- endif -%}
        {%- set t = types.get(rule['column'], {'type': 'text', 'name': rule['column']}) -%}
        {%- do out.append({
            'column': rule['column'], 'action': rule['action'], 'name': rule['processed_name'],
            'type': t['type'], 'stage_name': t['name'],
            'join': 'deid_' ~ (rule['processed_name'] or t['name'])}) -%}
    {%- endfor -%}
    {#- keys (pseudonyms, UIDs) first, then the rest by name -#}
    {%- set out = (out | selectattr('action', 'in', ['U', 'D']) | list) + (out | rejectattr('action', 'in', ['U', 'D']) | list) -%}
    {%- if execute and not out -%}
        {{ exceptions.raise_compiler_error("internal_anonymization_rules has no row for entity '" ~ entity ~ "': every column needs an action") }}
    {%- endif -%}
    {{ return(out) }}
{%- endmacro %}

{# The processed select list: one expression per kept, pseudonymized or cleaned column. #}
{% macro deid_columns(entity, base) -%}
    {%- set exprs = [] -%}
    {%- for r in deid_rules(entity) -%}
        {%- set col = base ~ '.' ~ r['stage_name'] -%}
        {%- if r['action'] == 'U' -%}
            {%- do exprs.append(r['join'] ~ '.pseudo_uid as ' ~ r['name']) -%}
        {%- elif r['action'] == 'D' -%}
            {%- do exprs.append(r['join'] ~ '.pseudonym as ' ~ r['name']) -%}
        {%- elif r['action'] == 'K' -%}
            {%- do exprs.append(col ~ ' as ' ~ r['name']) -%}
        {%- elif r['action'] == 'C' -%}
            {%- if r['type'] == 'DA' -%}
                {%- do exprs.append(shift_date(col, 'deid__patient.date_offset_days') ~ ' as ' ~ r['name']) -%}
            {%- elif r['type'] == 'DT' -%}
                {%- do exprs.append(shift_timestamp(col, 'deid__patient.date_offset_days') ~ ' as ' ~ r['name']) -%}
            {%- elif r['type'] == 'TM' -%}
                {#- the offset is whole days: times of day are unchanged -#}
                {%- do exprs.append(col ~ ' as ' ~ r['name']) -%}
            {%- elif r['type'] == 'AS' -%}
                {%- do exprs.append(generalize_age(col) ~ ' as ' ~ r['name']) -%}
            {%- else -%}
                {%- do exprs.append(clean_descriptor(col, 'deid_flag_' ~ r['name']) ~ ' as ' ~ r['name']) -%}
            {%- endif -%}
        {%- elif r['name'] -%}
            {#- Z with a processed_name: kept as an empty (null) column -#}
            {%- do exprs.append('cast(null as varchar) as ' ~ r['name']) -%}
        {%- endif -%}
    {%- endfor -%}
    {%- if not exprs -%}{%- do exprs.append('null as _not_compiled') -%}{%- endif -%}
    {{ exprs | join(',\n        ') }}
{%- endmacro %}

{# One join to the pseudonym map per pseudonymized column, and one for the patient's day offset. #}
{% macro deid_joins(entity, base, patient_key=none) -%}
    {%- for r in deid_rules(entity) if r['action'] in ('U', 'D') %}
    left join {{ source('deid', 'deid_pseudonyms') }} as {{ r['join'] }}
        on {{ r['join'] }}.original = {{ base }}.{{ r['stage_name'] }}
    {%- endfor %}
    {%- for r in deid_rules(entity) if r['action'] == 'C' and r['type'] not in ('DA', 'DT', 'TM', 'AS') %}
    left join (
        select distinct d.{{ r['stage_name'] }} as descriptor
        from {{ base }} as d
        inner join {{ ref('stg_phi_terms') }} as t on position(t.term in upper(d.{{ r['stage_name'] }})) > 0
    ) as deid_flag_{{ r['name'] }}
        on deid_flag_{{ r['name'] }}.descriptor = {{ base }}.{{ r['stage_name'] }}
    {%- endfor %}
    {%- if patient_key %}
    left join {{ source('deid', 'deid_pseudonyms') }} as deid__patient
        on deid__patient.original = {{ base }}.{{ patient_key }}
    {%- endif %}
{%- endmacro %}

{# The applied profile and options, recorded with every row (PS3.15 Table CID 7050 codes). #}
{% macro deid_provenance() -%}
    'YES' as patient_identity_removed,
    '{{ var("deid_method") }}' as deidentification_method,
    '{{ var("deid_method_codes") }}' as deidentification_method_codes
{%- endmacro %}

{# Per-patient shift back in time by 1..365 days: intervals between a patient's dates survive. #}
{% macro shift_date(column, offset_days) -%}
    {{ return(adapter.dispatch('shift_date', 'dicom_etl')(column, offset_days)) }}
{%- endmacro %}
{% macro default__shift_date(column, offset_days) -%}
    dateadd(day, -{{ offset_days }}, {{ column }})
{%- endmacro %}
{% macro duckdb__shift_date(column, offset_days) -%}
    cast({{ column }} - to_days(cast({{ offset_days }} as integer)) as date)
{%- endmacro %}

{% macro shift_timestamp(column, offset_days) -%}
    {{ return(adapter.dispatch('shift_timestamp', 'dicom_etl')(column, offset_days)) }}
{%- endmacro %}
{% macro default__shift_timestamp(column, offset_days) -%}
    dateadd(day, -{{ offset_days }}, {{ column }})
{%- endmacro %}
{% macro duckdb__shift_timestamp(column, offset_days) -%}
    ({{ column }} - to_days(cast({{ offset_days }} as integer)))
{%- endmacro %}

{% macro regex_match(column, pattern) -%}
    {{ return(adapter.dispatch('regex_match', 'dicom_etl')(column, pattern)) }}
{%- endmacro %}
{% macro default__regex_match(column, pattern) -%}
    regexp_like({{ column }}, '{{ pattern }}')
{%- endmacro %}
{% macro duckdb__regex_match(column, pattern) -%}
    regexp_matches({{ column }}, '{{ pattern }}')
{%- endmacro %}
{% macro snowflake__regex_match(column, pattern) -%}
    regexp_instr({{ column }}, '{{ pattern }}') > 0
{%- endmacro %}

{# AS (age string): kept; ages over 89 years become 090Y (HIPAA Safe Harbor). #}
{% macro generalize_age(column) -%}
    case
        when {{ regex_match(column, '^[0-9]{3}Y$') }} and cast(substr({{ column }}, 1, 3) as integer) > 89 then '090Y'
        else {{ column }}
    end
{%- endmacro %}

{#
  Clean Descriptors (113105), conservatively: a free-text descriptor is kept only when it
  holds nothing that looks like an identifier: no person-name separator (^), no e-mail, no
  run of 5+ digits (IDs, UIDs, dates), no date-like pattern, and no name part or ID of any
  patient or referring physician of the lake (stg_phi_terms; the deid_joins flag join).
  Otherwise it is removed (null).
#}
{% macro clean_descriptor(column, flag) -%}
    case
        when {{ column }} is null or trim({{ column }}) = '' then null
        when {{ regex_match(column, '[0-9]{5,}|[0-9]{1,4}[-./][0-9]{1,2}[-./][0-9]{1,4}|[@^]') }} then null
        when {{ flag }}.descriptor is not null then null
        else {{ column }}
    end
{%- endmacro %}
