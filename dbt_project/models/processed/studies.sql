with studies as (
    select * from {{ ref('stg_studies') }}
),

deidentified as (
    select
        {{ pseudo_uid('study_instance_uid') }} as study_pseudo_uid,
        {{ hmac_sha256('patient_key') }} as patient_pseudo_id,
        {{ shift_date('study_date', 'patient_key') }} as study_date_shifted,
        study_time,
        {{ hmac_sha256('accession_number') }} as accession_pseudonym,
        case
            when regexp_matches(patient_age, '^[0-9]{3}Y$') and cast(substr(patient_age, 1, 3) as integer) >= 90
                then '090Y'
            else patient_age
        end as patient_age,
        patient_size_m,
        patient_weight_kg
    from studies
)

select * from deidentified
